/* hello.c — the smallest libamora program: attach, write, read, detach.
 *
 *   cc hello.c $(pkg-config --cflags --libs amora) -o hello && ./hello DIR/amora.sock
 *
 * (after `make install`; in the tree: -Ibuild/include -Lbuild -lamora).
 */
#include <stdio.h>

#include "amora.h"

int main(int argc, char **argv)
{
	const char *sock = argc > 1 ? argv[1] : "amora-data/amora.sock";
	char buf[64];
	size_t len;
	amora *db;
	int rc = amora_open(sock, &db);

	if (rc != AMORA_OK) {
		fprintf(stderr, "cannot attach to %s: %s\n", sock, amora_strerror(rc));
		return 1;
	}
	rc = amora_set(db, "user:1", 6, "alice", 5); /* returns once durable */
	if (rc == AMORA_OK)
		rc = amora_get(db, "user:1", 6, buf, sizeof(buf), &len); /* no syscall */
	if (rc != AMORA_OK) {
		fprintf(stderr, "%s: %s\n", amora_strerror(rc), amora_errmsg(db));
		amora_close(db);
		return 1;
	}
	printf("user:1 = %.*s\n", (int)len, buf);
	return amora_close(db) == AMORA_OK ? 0 : 1;
}
