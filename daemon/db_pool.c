/* db_pool.c: a fixed set of database connections shared by the threads of
 * an HTTP server (http.c), each opened on first use and reopened when found
 * down, so that the server starts while the database is down. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "db_pool.h"

struct db_pool {
	char *url, *actor;
	pthread_mutex_t mu;
	pthread_cond_t freed;
	int size;
	PGconn **db;
	int *busy;
};

struct db_pool *db_pool_new(const char *url, const char *actor, int size)
{
	struct db_pool *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->size = size;
	p->url = strdup(url);
	p->actor = strdup(actor);
	p->db = calloc((size_t)size, sizeof(*p->db));
	p->busy = calloc((size_t)size, sizeof(*p->busy));
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->freed, NULL);
	if (!p->url || !p->actor || !p->db || !p->busy) {
		db_pool_free(p);
		return NULL;
	}
	return p;
}

void db_pool_free(struct db_pool *p)
{
	if (!p)
		return;
	for (int i = 0; p->db && i < p->size; i++)
		PQfinish(p->db[i]);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->freed);
	free(p->db);
	free(p->busy);
	free(p->url);
	free(p->actor);
	free(p);
}

int db_pool_run(struct db_pool *p, db_fn fn, void *arg, char *err, size_t errlen)
{
	int slot, tries, rc = -1;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		for (slot = 0; slot < p->size && p->busy[slot]; slot++)
			;
		if (slot < p->size)
			break;
		pthread_cond_wait(&p->freed, &p->mu);
	}
	p->busy[slot] = 1;
	pthread_mutex_unlock(&p->mu);

	for (tries = 0; tries < 2; tries++) {
		if (db_is_down(p->db[slot])) {
			PQfinish(p->db[slot]);
			p->db[slot] = db_connect(p->url, p->actor, err, errlen);
			if (!p->db[slot])
				break;
		}
		rc = fn(p->db[slot], arg, err, errlen);
		if (rc >= 0 || !db_is_down(p->db[slot]))
			break;
	}

	pthread_mutex_lock(&p->mu);
	p->busy[slot] = 0;
	pthread_cond_signal(&p->freed);
	pthread_mutex_unlock(&p->mu);
	return rc;
}
