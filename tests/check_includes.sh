#!/bin/sh
# The module graph (DESIGN.md): every include names its folder, and
# dependencies point one way:
#   shm/         includes shm/ only (the leaf)
#   shardd/      shm/, shardd/
#   coordinator/ shm/, shardd/, coordinator/
#   libclient/   shm/, libclient/ (examples/ use the installed "amora.h")
#   tests/       anything of the project but perf/
#   perf/        anything of the project (amorad is run through tests/daemon.h)
# Prints every include that breaks it and exits 1; exits 0 when none does.
cd "$(dirname "$0")/.." || exit 2
status=0
for f in shm/*.[ch] shardd/*.[ch] coordinator/*.[ch] libclient/*.[ch] tests/*.[ch] perf/*.[ch] perf/lib/*.[ch]; do
	dir=${f%%/*}
	case $dir in
	shm) allowed="shm" ;;
	shardd) allowed="shm shardd" ;;
	coordinator) allowed="shm shardd coordinator" ;;
	libclient) allowed="shm libclient" ;;
	tests) allowed="shm shardd coordinator libclient tests" ;;
	*) allowed="shm shardd coordinator libclient tests perf" ;;
	esac
	grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" | while IFS= read -r line; do
		inc=$(printf '%s\n' "$line" | sed 's/.*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/')
		top=${inc%%/*}
		# (vmlinux.h: the kernel's types, generated into the build dir)
		if [ "$inc" = vmlinux.h ] && [ "${f%.bpf.c}" != "$f" ]; then
			continue
		fi
		if [ "$top" = "$inc" ]; then
			echo "$f:${line%%:*}: #include \"$inc\" does not name its folder"
			echo x
			continue
		fi
		ok=0
		for a in $allowed; do [ "$top" = "$a" ] && ok=1; done
		if [ $ok = 0 ]; then
			echo "$f:${line%%:*}: $dir/ may not include $inc (allowed: $allowed)"
			echo x
		fi
	done
done | { bad=0; while IFS= read -r l; do if [ "$l" = x ]; then bad=1; else echo "$l"; fi; done; exit $bad; } || status=1
[ $status = 0 ] && echo "check: the include graph holds"
exit $status
