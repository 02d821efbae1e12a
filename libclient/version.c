/*
 * version.c — amora_version (amora.h).
 */
#include "libclient/amora.h"

/* The numbers this library was built with (shm/version.h, through
 * amora.h), not those of the header the caller was compiled with. */
const char *amora_version(int *major, int *minor, int *patch)
{
	if (major)
		*major = AMORA_VERSION_MAJOR;
	if (minor)
		*minor = AMORA_VERSION_MINOR;
	if (patch)
		*patch = AMORA_VERSION_PATCH;
	return AMORA_VERSION_STRING;
}
