/* secret.c: secrets read from files or taken out of the environment. The
 * file is opened once and checked through its descriptor, so that what is
 * checked is what is read (no stat/open race); a secret that does not fit
 * is refused, never cut to a wrong one. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/crypto.h>

#include "secret.h"

/* The longest secret any caller stores, with room for "\r\n" after it. */
#define SECRET_MAX 256

int secret_read_file(const char *path, char *out, size_t cap, char *why, size_t whylen)
{
	char buf[SECRET_MAX + 2];
	struct stat st;
	ssize_t n;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	const char *bad = NULL;
	char longer[48];

	if (cap > SECRET_MAX)
		cap = SECRET_MAX;
	snprintf(longer, sizeof(longer), "longer than %zu bytes", cap - 1);
	if (fd < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0)
		bad = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		bad = "not a regular file";
	else if (st.st_mode & 077)
		bad = "the file is readable by group or others (chmod 600 it)";
	else if (st.st_size > (off_t)cap + 1)
		bad = longer;
	while (!bad && len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) != 0) {
		if (n < 0 && errno != EINTR)
			bad = strerror(errno);
		else if (n > 0)
			len += (size_t)n;
	}
	close(fd);
	/* One line: a final "\n" or "\r\n" is not part of the secret. */
	if (!bad && len > 0 && buf[len - 1] == '\n')
		len--;
	if (!bad && len > 0 && buf[len - 1] == '\r')
		len--;
	if (!bad && len >= cap)
		bad = longer;
	else if (!bad && (memchr(buf, '\n', len) || memchr(buf, '\r', len) || memchr(buf, 0, len)))
		bad = "more than one line";
	if (!bad) {
		memcpy(out, buf, len);
		out[len] = '\0';
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	if (bad)
		snprintf(why, whylen, "%s", bad);
	return bad ? -1 : 0;
}

int secret_take_env(const char *name, char *store, size_t cap, char *why, size_t whylen)
{
	char *env = getenv(name);
	size_t n;

	if (!env)
		return 0;
	n = strlen(env);
	if (n < cap)
		memcpy(store, env, n + 1);
	OPENSSL_cleanse(env, n);
	unsetenv(name);
	if (n >= cap) {
		snprintf(why, whylen, "longer than %zu bytes", cap - 1);
		return -1;
	}
	return 0;
}
