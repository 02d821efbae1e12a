/*
 * test_install.c — `make install` into a temp DESTDIR, as someone shipping
 * against libamora would use it: the layout under the default PREFIX, the
 * SONAME and its links, libamora.so exporting amora_* alone, the installed
 * amora.h standing alone, amora.pc (the README's example built with
 * `pkg-config --cflags --libs amora` only, and statically with --static)
 * run against a real amorad, the version everywhere it is stated, and
 * `make uninstall` leaving no file behind. Nothing is installed outside
 * the test's temp dir.
 */
#include <sys/stat.h>

#include "tests/proc.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define SONAME "libamora.so." STR(AMORA_VERSION_MAJOR)
#define REALNAME "libamora.so." AMORA_VERSION_STRING
#define PREFIX "/usr/local" /* the Makefile's default */

static char dest[300]; /* DESTDIR: D.dir/dest */
static char root[400]; /* DESTDIR + PREFIX */

static void setup(void)
{
	proc_init();
	snprintf(dest, sizeof(dest), "%s/dest", D.dir);
	snprintf(root, sizeof(root), "%s" PREFIX, dest);
}

TestSuite(install, .init = setup, .fini = proc_fini, .timeout = 120);

/* `make TARGET` with DESTDIR, the default PREFIX and this build dir. Run
 * from `make test`, MAKEFLAGS carries its variables (a sanitizer build's
 * flags) along; everything install needs is a prerequisite of the test
 * binary, so nothing is rebuilt. */
static void make(const char *target)
{
	char cmd[1024], out[8192];
	int rc;

	snprintf(cmd, sizeof(cmd),
		 "env -u PREFIX -u BINDIR -u LIBDIR -u INCLUDEDIR -u PKGCONFIGDIR -u SYSCONFDIR "
		 "-u SYSTEMDUNITDIR make -s --no-print-directory BUILD=" AMORA_BUILD_DIR
		 " DESTDIR=%s %s 2>&1", dest, target);
	rc = proc_run(out, sizeof(out), cmd);
	cr_assert_eq(rc, 0, "make %s failed (%d):\n%s", target, rc, out);
}

/* lstat of DESTDIR/PREFIX/rel, which must exist with file type `type`. */
static struct stat installed(const char *rel, mode_t type)
{
	char path[600];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	cr_assert_eq(lstat(path, &st), 0, "%s is not installed: %s", path, strerror(errno));
	cr_assert_eq(st.st_mode & S_IFMT, type, "%s has the wrong file type (mode %o)", path,
		     (unsigned)st.st_mode);
	return st;
}

static void link_to(const char *rel, const char *target)
{
	char path[600], buf[256];
	ssize_t n;

	installed(rel, S_IFLNK);
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	n = readlink(path, buf, sizeof(buf) - 1);
	cr_assert_gt(n, 0);
	buf[n] = 0;
	cr_assert_str_eq(buf, target, "%s points to %s", rel, buf);
}

/* Whether the file DESTDIR/PREFIX/rel contains `needle`. */
static bool file_has(const char *rel, const char *needle)
{
	char path[600], buf[1 << 16];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return strstr(buf, needle) != NULL;
}

/* Run `cmd` with pkg-config pointed at the installed amora.pc alone (the
 * sysroot prefixes its -I and -L with DESTDIR); returns its status. */
static int with_pkgconfig(char *out, size_t cap, const char *cmd)
{
	char full[8192];

	snprintf(full, sizeof(full),
		 "export PKG_CONFIG_LIBDIR=%s/lib/pkgconfig PKG_CONFIG_PATH= PKG_CONFIG_SYSROOT_DIR=%s; %s",
		 root, dest, cmd);
	return proc_run(out, cap, full);
}

static void layout(void)
{
	installed("bin/amorad", S_IFREG);
	cr_assert(installed("bin/amora", S_IFREG).st_mode & S_IXUSR);
	cr_assert(installed("bin/amorad", S_IFREG).st_mode & S_IXUSR);
	installed("lib/" REALNAME, S_IFREG);
	link_to("lib/" SONAME, REALNAME);
	link_to("lib/libamora.so", SONAME);
	installed("lib/libamora.a", S_IFREG);
	installed("include/amora.h", S_IFREG);
	installed("lib/pkgconfig/amora.pc", S_IFREG);
	installed("lib/systemd/system/amorad.service", S_IFREG);
	installed("etc/amora/amorad.conf.example", S_IFREG);
	cr_assert(file_has("lib/systemd/system/amorad.service",
			   "ExecStart=" PREFIX "/bin/amorad --config " PREFIX "/etc/amora/amorad.conf"),
		  "the unit does not start the installed amorad with the installed config's path");
	cr_assert(file_has("lib/pkgconfig/amora.pc", "Libs.private: -lisal -lpthread"));
	cr_assert(!file_has("include/amora.h", "#include \""),
		  "the installed amora.h includes a header that is not installed");
	cr_assert(file_has("include/amora.h", "#define AMORA_VERSION_MAJOR"));
}

/* The dynamic symbols libamora.so defines are amora_* and nothing else,
 * and it carries its SONAME. */
static void exports(void)
{
	char cmd[1024], out[16384], *save = NULL;
	int n = 0;
	bool open_seen = false, version_seen = false;

	snprintf(cmd, sizeof(cmd), "nm -D --defined-only %s/lib/libamora.so", root);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0, "nm failed: %s", out);
	for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char type = 0, name[256] = "";

		cr_assert_eq(sscanf(line, "%*s %c %255s", &type, name), 2, "nm printed \"%s\"", line);
		cr_assert(strncmp(name, "amora_", 6) == 0, "libamora.so exports %s (%c)", name, type);
		open_seen |= strcmp(name, "amora_open") == 0;
		version_seen |= strcmp(name, "amora_version") == 0;
		n++;
	}
	cr_assert(open_seen && version_seen, "amora_open/amora_version missing from %d symbols", n);
	snprintf(cmd, sizeof(cmd), "readelf -d %s/lib/" REALNAME " | grep SONAME", root);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0, "no SONAME");
	cr_assert(strstr(out, "[" SONAME "]") != NULL, "SONAME: %s", out);
}

Test(install, installs_builds_the_readme_example_with_pkgconfig_and_uninstalls)
{
	char cmd[4096], out[8192];

	make("install");
	layout();
	exports();

	cr_assert_eq(with_pkgconfig(out, sizeof(out), "pkg-config --modversion amora"), 0, "%s", out);
	cr_assert_str_eq(out, AMORA_VERSION_STRING "\n");

	/* The README's example, from a directory holding nothing else, built
	 * with pkg-config's flags only: against the .so, then the .a. */
	snprintf(cmd, sizeof(cmd), "mkdir %s/src && cp libclient/examples/hello.c %s/src/", D.dir, D.dir);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0);
	snprintf(cmd, sizeof(cmd),
		 "cc -Wall -Werror " AMORA_EXTRA_LDFLAGS " %s/src/hello.c $(pkg-config --cflags --libs amora) "
		 "-o %s/hello 2>&1", D.dir, D.dir);
	cr_assert_eq(with_pkgconfig(out, sizeof(out), cmd), 0, "building hello.c: %s", out);
	snprintf(cmd, sizeof(cmd),
		 "cc -Wall -Werror " AMORA_EXTRA_LDFLAGS " %s/src/hello.c $(pkg-config --cflags amora) "
		 "$(pkg-config --static --libs amora | sed 's/-lamora\\b/-l:libamora.a/') -o %s/hello-static 2>&1",
		 D.dir, D.dir);
	cr_assert_eq(with_pkgconfig(out, sizeof(out), cmd), 0, "building hello.c statically: %s", out);

	proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
	snprintf(cmd, sizeof(cmd), "LD_LIBRARY_PATH=%s/lib ldd %s/hello | grep libamora", root, D.dir);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0, "hello is not linked with libamora.so");
	cr_assert(strstr(out, root) != NULL, "hello loads another libamora: %s", out);
	snprintf(cmd, sizeof(cmd), "LD_LIBRARY_PATH=%s/lib %s/hello %s 2>&1", root, D.dir, D.sock);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0, "hello (shared) failed: %s", out);
	cr_assert_str_eq(out, "user:1 = alice\n");
	snprintf(cmd, sizeof(cmd), "ldd %s/hello-static | grep -c libamora", D.dir);
	proc_run(out, sizeof(out), cmd);
	cr_assert_str_eq(out, "0\n", "hello-static needs a libamora.so");
	snprintf(cmd, sizeof(cmd), "%s/hello-static %s 2>&1", D.dir, D.sock);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0, "hello (static) failed: %s", out);
	cr_assert_str_eq(out, "user:1 = alice\n");
	/* the installed CLI reads what hello wrote */
	snprintf(cmd, sizeof(cmd), "%s/bin/amora -s %s get user:1", root, D.sock);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0);
	cr_assert_str_eq(out, "alice");

	make("uninstall");
	snprintf(cmd, sizeof(cmd), "find %s ! -type d", dest);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0);
	cr_assert_str_eq(out, "", "make uninstall left:\n%s", out);
	snprintf(cmd, sizeof(cmd), "test -e %s/etc/amora", root);
	cr_assert_neq(proc_run(out, sizeof(out), cmd), 0, "make uninstall left etc/amora");
}

/* The one version: the header's macros, amora_version(), amorad's INFO. */
Test(install, version_is_the_same_everywhere)
{
	char cmd[1024], out[8192];
	int major = -1, minor = -1, patch = -1;
	const char *v = amora_version(&major, &minor, &patch);

	cr_assert_str_eq(v, AMORA_VERSION_STRING);
	cr_assert_eq(major, AMORA_VERSION_MAJOR);
	cr_assert_eq(minor, AMORA_VERSION_MINOR);
	cr_assert_eq(patch, AMORA_VERSION_PATCH);
	snprintf(cmd, sizeof(cmd), "%d.%d.%d", major, minor, patch);
	cr_assert_str_eq(cmd, v);
	cr_assert_eq(AMORA_VERSION_FULL, AMORA_VERINT(major, minor, patch));
	cr_assert_str_eq(amora_version(NULL, NULL, NULL), v);

	proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
	snprintf(cmd, sizeof(cmd), "redis-cli -s %s info", D.sock);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0, "redis-cli info: %s", out);
	cr_assert(strstr(out, "amora_version:" AMORA_VERSION_STRING "\r\n") != NULL, "INFO says:\n%s", out);
}
