/*
 * loop.h — amorad's event loop: one handler per registered descriptor, as
 * Redis's ae.c registers a handler and its object per fd.
 *
 * Whoever watches a descriptor owns a struct loop_fd (inside its own object:
 * a connection holds one for its socket and one for its pidfd) and fills in
 * the fd, the handler and the object the handler gets. epoll hands the
 * struct loop_fd back with each event, and loop_wait() calls
 * proc(a, obj, events) with epoll's event bits.
 *
 * Removal within a batch: loop_del() clears proc, and an event of that fd
 * still queued in the batch being dispatched is dropped. So the struct
 * loop_fd must stay valid until loop_wait() returns (a closed connection is
 * freed only after the batch: srv_free_closed); it may then be freed.
 */
#ifndef AMORA_LOOP_H
#define AMORA_LOOP_H

#include <stddef.h>
#include <stdint.h>

struct amorad;

typedef void loop_proc(struct amorad *a, void *obj, uint32_t events);

/* One watched descriptor. proc NULL: not watched (never added, or removed). */
struct loop_fd {
	int fd;
	loop_proc *proc;
	void *obj;
};

struct loop {
	int epfd;
};

/* The epoll instance (it lives as long as amorad). Returns 0, or -1 with
 * the reason in err. */
int loop_open(struct loop *l, char *err, size_t errlen);

/* Watch f->fd for `events` (EPOLLIN, ...) with handler proc and its obj.
 * Returns 0, or -1 with the reason in err (f is then not watched). */
int loop_add(struct loop *l, struct loop_fd *f, int fd, uint32_t events, loop_proc *proc,
	     void *obj, char *err, size_t errlen);
/* Change the events of a watched descriptor (its registration exists, so
 * this cannot fail for lack of memory). */
void loop_mod(struct loop *l, struct loop_fd *f, uint32_t events);
/* Stop watching f (before its fd is closed); no-op if it is not watched. */
void loop_del(struct loop *l, struct loop_fd *f);

/* Wait up to timeout_ms for events and run the handler of each. */
void loop_wait(struct loop *l, struct amorad *a, int timeout_ms);

#endif
