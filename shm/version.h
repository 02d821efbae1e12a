/*
 * version.h — Amora's version: the one place it is written down.
 *
 * Everything that states a version takes it from here: amora.h's
 * AMORA_VERSION_* and amora_version() (libamora), amorad's INFO field
 * `amora_version:`, and the Makefile, which reads the three numbers below
 * for the shared library's names (libamora.so.MAJOR.MINOR.PATCH, SONAME
 * libamora.so.MAJOR) and amora.pc's Version. Bump it here only.
 *
 * This file stands alone (no includes, only macros) so that every layer can
 * use it without depending on another: libclient/amora.h includes it, and
 * `make install` copies it into the installed amora.h, which then needs no
 * other header of this tree. The Makefile matches the three #define lines
 * below literally: keep each number on its own line as it is.
 */
#ifndef AMORA_VERSION_H
#define AMORA_VERSION_H

#define AMORA_VERSION_MAJOR 0 /* an incompatible change of the ABI */
#define AMORA_VERSION_MINOR 2 /* additions */
#define AMORA_VERSION_PATCH 0 /* fixes */

/* One integer, comparable: AMORA_VERINT(0, 1, 0) <= AMORA_VERSION_FULL. */
#define AMORA_VERINT(major, minor, patch) (((major) << 24) | ((minor) << 16) | (patch))
#define AMORA_VERSION_FULL AMORA_VERINT(AMORA_VERSION_MAJOR, AMORA_VERSION_MINOR, AMORA_VERSION_PATCH)

/* "0.1.0" */
#define AMORA_VERSTR_(a, b, c) #a "." #b "." #c
#define AMORA_VERSTR(a, b, c) AMORA_VERSTR_(a, b, c)
#define AMORA_VERSION_STRING AMORA_VERSTR(AMORA_VERSION_MAJOR, AMORA_VERSION_MINOR, AMORA_VERSION_PATCH)

#endif
