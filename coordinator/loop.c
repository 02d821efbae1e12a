/*
 * loop.c — epoll with a handler per descriptor (see loop.h).
 *
 * epoll's data word holds the struct loop_fd itself, so an event finds its
 * handler and object without a lookup; a registration removed earlier in
 * the same batch has proc NULL and its queued event is dropped.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "coordinator/loop.h"

#define LOOP_BATCH 64

int loop_open(struct loop *l, char *err, size_t errlen)
{
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		snprintf(err, errlen, "epoll_create1: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int loop_add(struct loop *l, struct loop_fd *f, int fd, uint32_t events, loop_proc *proc,
	     void *obj, char *err, size_t errlen)
{
	struct epoll_event e = { .events = events, .data.ptr = f };

	*f = (struct loop_fd){ .fd = fd, .proc = NULL, .obj = obj };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
		snprintf(err, errlen, "cannot watch descriptor %d (epoll_ctl): %s", fd, strerror(errno));
		return -1;
	}
	f->proc = proc;
	return 0;
}

void loop_mod(struct loop *l, struct loop_fd *f, uint32_t events)
{
	struct epoll_event e = { .events = events, .data.ptr = f };

	epoll_ctl(l->epfd, EPOLL_CTL_MOD, f->fd, &e);
}

void loop_del(struct loop *l, struct loop_fd *f)
{
	if (f->proc == NULL)
		return;
	/* Explicitly, not by close(2): a copy of the fd (a shard forked a
	 * moment ago, before it closed what it inherited) would keep the
	 * registration alive. */
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, f->fd, NULL);
	f->proc = NULL;
}

void loop_wait(struct loop *l, struct amorad *a, int timeout_ms)
{
	struct epoll_event ev[LOOP_BATCH];
	int n = epoll_wait(l->epfd, ev, LOOP_BATCH, timeout_ms);

	for (int i = 0; i < n; i++) {
		struct loop_fd *f = ev[i].data.ptr;

		if (f->proc != NULL)
			f->proc(a, f->obj, ev[i].events);
	}
}
