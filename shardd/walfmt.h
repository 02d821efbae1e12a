/*
 * walfmt.h — the byte format of a shard's log segments: names, headers,
 * frames, records, and the decoder that validates them in memory.
 *
 * This file defines the on-disk format (DESIGN.md §9). Everything here
 * works on memory only (no file, no log line, no global), so recovery
 * (wal.c), the fuzzer and tools that read logs link just walfmt.c and
 * shm/crc32c.c. What to do with the files (creation, rotation, cutting a
 * torn tail, which damage is tolerated where) is wal.c's business.
 *
 * Names
 * -----
 * wal-XXXXXXXXXXXXXXXX.log, XXXX.. = the seq of the segment's first record
 * as 16 lowercase hex digits, so names sort like seqs.
 *
 * Format (all integers little-endian)
 * -----------------------------------
 * Segment header, 40 bytes at offset 0:
 *
 *     0   u32  magic      0x4c574d41, the bytes "AMWL"
 *     4   u32  version    1
 *     8   u32  shard_id   the shard that owns the directory
 *     12  u32  hdr_size   40
 *     16  u64  first_seq  == the seq in the file name, >= 1
 *     24  u64  prev_seq   last seq logged before this segment (0: none), < first_seq
 *     32  u32  reserved   0
 *     36  u32  crc        CRC32C of bytes 0..35
 *
 * prev_seq chains the segments: a segment that goes missing between two
 * others breaks the chain and is reported, although seqs may have gaps.
 * The first segment's prev_seq says after which seq the log begins (older
 * segments are dropped once a checkpoint covers them): a checkpoint older
 * than that would leave a hole, which the caller can check (wal.base_seq).
 *
 * Then frames, back to back, each starting at an 8-aligned offset (40, ...):
 *
 *     0   u32  magic      0x46574d41, the bytes "AMWF"
 *     4   u32  hdr_crc    CRC32C of frame bytes 8..31
 *     8   u32  len        bytes of records, 17 .. WALFMT_BATCH_MAX (2^30)
 *     12  u32  nrec       number of records, >= 1
 *     16  u64  first_seq  seq of the first record
 *     24  u32  body_crc   CRC32C of the len record bytes and the pad
 *     28  u32  reserved   0
 *     32  records (len bytes), then pad: zero bytes up to the next multiple
 *         of 8; the frame is 32 + align8(len) bytes.
 *
 * Record, back to back inside the frame (no alignment). Ops 1 and 2 (the
 * effects of single writes) have a 16-byte header:
 *
 *     0   u64  seq
 *     8   u8   op         1 = SET (key now holds value), 2 = DEL (key gone)
 *     9   u8   reserved   0
 *     10  u16  klen       1 .. 4096 (SHM_KEY_MAX)
 *     12  u32  vlen       0 .. 1 MiB (SHM_VALUE_MAX); 0 for DEL
 *     16  klen bytes of key, then vlen bytes of value
 *
 * Ops 3..6 (atomic batches, DESIGN.md §16) have a 40-byte header naming
 * the batch:
 *
 *     0   u64  seq
 *     8   u8   op         3 = PSET (a prepared part's write: the key will
 *                             hold the value if the batch commits),
 *                         4 = PDEL (a prepared part's delete),
 *                         5 = DECISION (logged by the batch's primary: the
 *                             batch committed; there is no abort record:
 *                             no decision = aborted),
 *                         6 = RESOLVED (a participant resolved its part)
 *     9   u8   outcome    RESOLVED: 1 = committed, 2 = aborted; other ops 0
 *     10  u16  klen       PSET, PDEL: 1 .. 4096; DECISION, RESOLVED: 0
 *     12  u32  vlen       PSET: 0 .. 1 MiB; others 0
 *     16  u64  boot       the batch id, part 1: the store's boot id (opaque here)
 *     24  u64  ref        the batch id, part 2 (opaque here), != 0
 *     32  u32  primary    shard id of the batch's primary, < 65536
 *     36  u32  reserved   0
 *     40  klen bytes of key, then vlen bytes of value
 *
 * Every record takes a seq, whatever its op.
 *
 * Validity rules
 * --------------
 * Segment header: magic and crc right, else the header is damaged; a
 * damaged header followed by no intact frame is a torn file, otherwise
 * corruption. With a right crc, version, hdr_size, reserved, shard_id,
 * first_seq (equal to the name's) and prev_seq (below first_seq; equal to
 * the last seq of the segment before, if any) must hold, else corruption.
 *
 * A frame is INTACT when its magic, hdr_crc, and body_crc match and the
 * whole frame lies inside the file. It is VALID when it is intact and:
 * reserved == 0, len and nrec in range, exactly nrec records fill exactly
 * len bytes, every record has op 1..6 and its header fields as the record
 * format above says (reserved and outcome bytes zero where they must be,
 * klen and vlen in range for its op, ref != 0, primary < 65536: see
 * walfmt_rec_check), the first record's seq equals first_seq, seqs strictly
 * increase within the frame and across frames and segments, the first frame
 * of a segment starts at the segment's first_seq, and the pad is zeros. An
 * intact frame that is not valid is corruption (the checksums say the bytes
 * are what the writer wrote, so the writer broke a rule).
 *
 * Scanning a segment: frames are taken while valid. At the first offset
 * that is not a valid frame: if it is the end of the file, or only zeros
 * follow up to the end, the segment ends cleanly; else an intact frame
 * anywhere after it (at 8-aligned offsets) means corruption; else the tail
 * is torn. When the bad frame's header is intact, the search starts after
 * the extent it claims (for a frame cut short by the end of the file: no
 * search at all), so a half-written value that happens to contain the bytes
 * of a frame cannot pass for one.
 */
#ifndef AMORA_SHARDD_WALFMT_H
#define AMORA_SHARDD_WALFMT_H

#include <stddef.h>
#include <stdint.h>

#define WALFMT_NAME_LEN 24           /* "wal-" + 16 hex + ".log" */
#define WALFMT_SEG_HDR 40u
#define WALFMT_FRAME_HDR 32u
#define WALFMT_REC_HDR 16u          /* ops 1, 2 */
#define WALFMT_BATCH_HDR 40u        /* ops 3..6 */
#define WALFMT_PRIMARY_MAX 65536u   /* primary < this */
#define WALFMT_BATCH_MAX (1u << 30)  /* record bytes in one frame */

enum walfmt_op {
	WALFMT_OP_SET = 1,
	WALFMT_OP_DEL = 2,
	WALFMT_OP_PSET = 3,
	WALFMT_OP_PDEL = 4,
	WALFMT_OP_DECISION = 5,
	WALFMT_OP_RESOLVED = 6,
};

/* A RESOLVED record's outcome (byte 9). */
#define WALFMT_COMMITTED 1
#define WALFMT_ABORTED 2

/* The batch fields of a record of ops 3..6 (bytes 9 and 16..35). outcome
 * is 0 except in RESOLVED. */
struct walfmt_batch {
	uint64_t boot, ref;
	uint32_t primary;
	uint8_t outcome;
};

/* 1 for the ops with a batch header (3..6). */
static inline int walfmt_op_batch(int op)
{
	return op >= WALFMT_OP_PSET && op <= WALFMT_OP_RESOLVED;
}

/* Bytes one record takes in a frame. */
static inline uint64_t walfmt_rec_size(int op, uint32_t klen, uint32_t vlen)
{
	return (walfmt_op_batch(op) ? WALFMT_BATCH_HDR : WALFMT_REC_HDR) + (uint64_t)klen + vlen;
}

/* The record rules of the format above that the encoder's caller must
 * keep (b NULL for ops 1, 2, required for 3..6): NULL when a record of op
 * with these fields is valid, else its cause ("bad op", ...), a constant
 * string. The decoder and wal_batch_add both judge records with it. */
const char *walfmt_rec_check(int op, const struct walfmt_batch *b, uint32_t klen, uint32_t vlen);

/* Bytes a frame of len record bytes takes, header and pad included. */
static inline uint64_t walfmt_frame_size(uint64_t len)
{
	return WALFMT_FRAME_HDR + ((len + 7) & ~(uint64_t)7);
}

/* ---- Names ---- */

/* The name of the segment whose first record is first_seq. */
void walfmt_seg_name(char out[WALFMT_NAME_LEN + 1], uint64_t first_seq);
/* 1 and *first_seq when name is a segment's name, else 0 (other files in a
 * log directory, such as checkpoints, are not segments). */
int walfmt_seg_name_parse(const char *name, uint64_t *first_seq);

/* ---- Encoding (no checks: the caller keeps to the rules above) ---- */

/* The segment header. */
void walfmt_seg_encode(uint8_t h[WALFMT_SEG_HDR], uint32_t shard_id, uint64_t first_seq,
		       uint64_t prev_seq);
/* One record at p, walfmt_rec_size(op, klen, vlen) bytes (key unread when
 * klen is 0, val when vlen is 0). b: the batch fields for ops 3..6 (its
 * outcome goes to byte 9), NULL for SET and DEL. */
void walfmt_rec_encode(uint8_t *p, uint64_t seq, enum walfmt_op op, const struct walfmt_batch *b,
		       const void *key, uint32_t klen, const void *val, uint32_t vlen);
/* Seal a frame built in place: frame[WALFMT_FRAME_HDR ..] holds len bytes
 * of nrec records, the first with seq first_seq. Writes the zero pad (the
 * buffer must hold walfmt_frame_size(len) bytes) and the header with both
 * checksums; returns walfmt_frame_size(len). */
uint64_t walfmt_frame_seal(uint8_t *frame, uint64_t len, uint32_t nrec, uint64_t first_seq);

/* ---- Decoding ---- */

/* Called for one record of a valid frame, oldest first. b: the batch
 * fields of ops 3..6 (valid during the call only), NULL for SET and DEL.
 * key/val point into the scanned buffer (klen 0 for DECISION and
 * RESOLVED). Return 0 to go on; anything else stops the scan. */
typedef int (*walfmt_apply_fn)(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
			       const void *key, uint32_t klen, const void *val, uint32_t vlen);

enum walfmt_status {
	WALFMT_CLEAN = 0,  /* valid frames, then end of buffer or only zeros */
	WALFMT_TORN = 1,   /* valid frames up to `end`, then bytes holding no intact frame */
	WALFMT_CORRUPT = 2 /* damage at `bad_off` with valid data after it, or a rule broken */
};

struct walfmt_scan {
	/* in */
	uint32_t shard_id;
	uint64_t name_seq;      /* first seq from the file name (0: not checked) */
	int chained;            /* 1: a segment comes before this one... */
	uint64_t prev_seq;      /* ...and ends at this seq (its prev_seq must match) */
	/* out */
	enum walfmt_status status;
	uint64_t end;           /* offset past the last valid frame (0: header bad) */
	uint64_t bad_off;       /* where the damage starts (TORN, CORRUPT) */
	uint64_t base_seq;      /* the header's prev_seq */
	uint64_t last_seq;      /* last seq replayed (else prev_seq, or base_seq if unchained) */
	uint64_t frames, records;
	char why[160];          /* what is wrong at bad_off, or why fn stopped */
};

/* Validate the segment in buf[0..len) and call fn (may be NULL) for every
 * record of every valid frame before the first bad byte. Returns 0 (the
 * verdict is sc->status), or -1 when fn returned non-zero (sc->end is the
 * offset of that record's frame, sc->why names its seq). Never reads
 * outside the buffer. */
int walfmt_scan(const void *buf, size_t len, walfmt_apply_fn fn, void *arg,
		struct walfmt_scan *sc);

#endif
