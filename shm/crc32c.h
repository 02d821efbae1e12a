/*
 * crc32c.h — CRC32C (Castagnoli), the checksum of every on-disk record.
 *
 * Backed by ISA-L's crc32_iscsi (about 3x a plain SSE4.2 loop here). The
 * result is the standard CRC32C: shm_crc32c("123456789", 9) == 0xE3069283.
 * shm_crc32c_extend() continues a checksum over more bytes, so a record's
 * header and payload can be summed without copying them together:
 *   shm_crc32c_extend(shm_crc32c(a, la), b, lb) == shm_crc32c(a ++ b).
 */
#ifndef AMORA_SHM_CRC32C_H
#define AMORA_SHM_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t shm_crc32c(const void *buf, size_t len);
uint32_t shm_crc32c_extend(uint32_t crc, const void *buf, size_t len);

#endif
