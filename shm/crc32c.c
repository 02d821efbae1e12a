/*
 * crc32c.c — CRC32C through ISA-L.
 *
 * crc32_iscsi() works on the raw register value and takes an int length,
 * so the standard pre/post inversion is done here and long buffers are fed
 * in pieces below INT_MAX.
 */
#include <isa-l/crc.h>
#include <limits.h>

#include "shm/crc32c.h"

#define PIECE ((size_t)1 << 30)

uint32_t shm_crc32c_extend(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t reg = ~crc;

	while (len > 0) {
		size_t n = len < PIECE ? len : PIECE;
		reg = crc32_iscsi((unsigned char *)p, (int)n, reg);
		p += n;
		len -= n;
	}
	return ~reg;
}

uint32_t shm_crc32c(const void *buf, size_t len)
{
	return shm_crc32c_extend(0, buf, len);
}
