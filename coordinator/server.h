/*
 * server.h — what the files of amorad's control socket share (amorad.h has
 * what main.c calls):
 *
 *   listen.c    the listening socket and the file modes that follow the
 *               allow-lists;
 *   admit.c     who may connect and how many: allow-lists, connection
 *               limits, refusals; an admitted peer becomes a connection;
 *   server.c    connections: reading requests (within the input-buffer
 *               budget), running them, writing replies, closing, timeouts;
 *   commands.c  the command table: lookup, arity, flags, the small commands;
 *   slots.c     client slots: AMORA.ATTACH, detaching, recycling slots,
 *               cutting off stuck readers and clients the shards cut off.
 *
 * Everything runs on amorad's one thread. Errors: a function that can fail
 * returns 0 or -1 and writes the cause into (err, errlen); its caller tells
 * the peer (a RESP error line) or the log, never both sides at once.
 */
#ifndef AMORA_SERVER_H
#define AMORA_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "coordinator/amorad.h"
#include "coordinator/loop.h"
#include "coordinator/resp.h"

/* One connection of the control socket. Owned by server.c (conn_open,
 * conn_close); listed in a->conns while open. */
struct conn {
	struct loop_fd sock;  /* the socket (sock.fd), server.c's handler */
	struct loop_fd pidfd; /* the peer's pidfd once attached (slots.c); fd -1: none */
	pid_t pid;            /* the peer's pid, uid and gid (SO_PEERCRED at accept) */
	uid_t uid;
	gid_t gid;
	int slot; /* -1: not attached */
	char *in;   /* an unfinished request (mmap, see in_reserve), NULL: none */
	size_t inlen, incap;
	uint64_t req_since_ns;     /* when the request in `in` began */
	uint64_t closing_since_ns; /* close_after_write seen by srv_expire; 0: not yet */
	struct resp_buf out;
	bool close_after_write;
	struct conn *next_closed; /* on a->closed until srv_free_closed */
};

/* server.c */
/* A connection for an admitted peer's socket fd (non-blocking), watched
 * for requests. Returns 0, or -1 with the reason in err (fd not taken). */
int conn_open(struct amorad *a, int fd, const struct ucred *cred, char *err, size_t errlen);
/* Detach, close both descriptors, leave a->conns; freed after the batch. */
void conn_close(struct amorad *a, struct conn *c);

/* admit.c */
/* The listening socket's handler (listen.c registers it). */
void admit_accept(struct amorad *a, void *obj, uint32_t events);
/* Root and amorad's own uid: always allowed, never counted per uid. */
bool admit_is_owner(uid_t uid);
/* A refusal in the log, at most one line a second. */
void admit_log_refusal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* commands.c */
/* Run one parsed request (argc > 0): its reply, or the error line, goes
 * to c->out. */
void cmd_run(struct amorad *a, struct conn *c, const struct resp_cmd *cmd);

/* slots.c */
/* AMORA.ATTACH (the reply is sent at once, with its descriptors). */
void cmd_attach(struct amorad *a, struct conn *c, const struct resp_cmd *cmd);
/* The connection's client leaves its slot (no-op if not attached). */
void slot_detach(struct amorad *a, struct conn *c);

#endif
