/*
 * ckptfile.h — checkpoint files: a shard's live records at a log position,
 * so that recovery reads the newest checkpoint and only the log after it
 * (DESIGN.md §17). The byte format and its validity rules are at the top
 * of ckptfile.c, which writes and reads them; what a checkpoint holds and
 * when one is taken is ckpt.h's business.
 *
 * Writing (one thread; the file appears under its final name only once it
 * is complete and synced):
 *
 *     ckpt_writer_open(&cw, dir, shard, covered, replay, boot);
 *     ckpt_writer_kv(&cw, seq, key, klen, val, vlen);     // per live key
 *     ckpt_writer_decision(&cw, boot, ref, primary);        // per decision kept
 *     ckpt_writer_finish(&cw);   // footer, LZ4 end, fdatasync, rename, dir fsync
 *     (or ckpt_writer_abort(&cw) to drop the temp file)
 *
 * Reading: ckpt_decode on bytes in memory (the fuzzer's entry point),
 * ckpt_read on a file of a directory (mapped read-only: its writer never
 * changes a file after the rename, and a removal does not disturb the
 * mapping). The entry callback runs as entries are decoded, before the
 * footer is checked: a caller that must not act on a damaged file collects
 * what it is told and uses it only after CKPT_OK.
 *
 * Errors: CKPT_OK or a negative CKPT_E* code; `why` names the file, the
 * byte offset and the cause. Nothing here logs or keeps global state, so
 * any thread may use it.
 */
#ifndef AMORA_SHARDD_CKPTFILE_H
#define AMORA_SHARDD_CKPTFILE_H

#include <stddef.h>
#include <stdint.h>

#include <lz4frame.h>

enum ckpt_err {
	CKPT_OK = 0,
	CKPT_EIO = -1,      /* open, write, sync, rename, map failed */
	CKPT_EBAD = -2,     /* the file is damaged, truncated or not a checkpoint of this shard */
	CKPT_ENOMEM = -3,
	CKPT_EINVAL = -4,   /* an entry the format forbids (writer), bad argument */
	CKPT_EAPPLY = -5,   /* the entry callback returned non-zero */
};

#define CKPT_HDR 64u
#define CKPT_KV_HDR 20u
#define CKPT_DECISION_BYTES 28u
#define CKPT_FOOTER 56u
#define CKPT_NAME_LEN 42 /* "ckpt-" + 16 hex + "-" + 16 hex + ".lz4" */

enum ckpt_type { CKPT_KV = 1, CKPT_DECISION = 2, CKPT_END = 0xff };

/* The header's and footer's fields. */
struct ckpt_info {
	uint32_t shard_id;
	uint64_t covered;  /* the log position the checkpoint began at */
	uint64_t replay;   /* recovery replays the log's records with seq > replay */
	uint64_t boot;     /* the data segment's boot id when written */
	uint64_t created_ns; /* CLOCK_REALTIME */
	uint64_t kvs, decisions;
	uint64_t min_seq, max_seq; /* of the KV entries; 0, 0 when none */
};

/* One entry, valid during the callback only. */
struct ckpt_entry {
	int type;           /* CKPT_KV or CKPT_DECISION */
	uint64_t seq;       /* KV */
	const uint8_t *key, *val;
	uint32_t klen, vlen;
	uint64_t boot, ref; /* DECISION: the batch id (walfmt.h's DECISION record) */
	uint32_t primary;   /* DECISION */
};
typedef int (*ckpt_entry_fn)(void *arg, const struct ckpt_entry *e);

/* ---- names ---- */

/* ckpt-<covered, 16 hex>-<replay, 16 hex>.lz4; temp files add ".tmp". */
void ckpt_name(char out[CKPT_NAME_LEN + 1], uint64_t covered, uint64_t replay);
/* 1 with both seqs when `name` is a checkpoint's (not a temp file), else 0. */
int ckpt_name_parse(const char *name, uint64_t *covered, uint64_t *replay);

struct ckpt_file {
	uint64_t covered, replay;
};
/* The checkpoints in dir, oldest first (*out malloc'ed; n 0: none, *out
 * NULL), after removing temp files a crash left (when remove_temps).
 * CKPT_EIO, CKPT_ENOMEM with why. */
int ckpt_list(const char *dir, int remove_temps, struct ckpt_file **out, size_t *n, char *why,
	      size_t whylen);

/* ---- writing ---- */

struct ckpt_writer {
	int dirfd, fd;
	char name[CKPT_NAME_LEN + 1];
	char tmp[CKPT_NAME_LEN + 5];
	LZ4F_cctx *cctx;
	uint8_t *in;          /* entries not yet compressed */
	size_t inlen, incap;
	uint8_t *out;         /* compressed bytes not yet written */
	size_t outcap;
	uint64_t file_off;    /* bytes written to the file */
	uint32_t shard_id;
	uint32_t crc;         /* of the entries so far */
	uint64_t entry_bytes, kvs, decisions, min_seq, max_seq;
	uint64_t raw_bytes;   /* header, entries and footer: what the frame holds */
	char why[320];
};

/* Create dir/<ckpt_name>.tmp and write the header. CKPT_EIO, CKPT_ENOMEM. */
int ckpt_writer_open(struct ckpt_writer *cw, const char *dir, uint32_t shard_id, uint64_t covered,
		     uint64_t replay, uint64_t boot);
/* A live key: klen 1..4096, vlen 0..1 MiB (CKPT_EINVAL otherwise). */
int ckpt_writer_kv(struct ckpt_writer *cw, uint64_t seq, const void *key, uint32_t klen,
		   const void *val, uint32_t vlen);
/* A batch decision the checkpoint carries (ref != 0, primary < 65536). */
int ckpt_writer_decision(struct ckpt_writer *cw, uint64_t boot, uint64_t ref, uint32_t primary);
/* Footer, end of frame, fdatasync, rename to the final name, directory
 * fsync. The writer is closed whatever the result (a failure removes the
 * temp file). */
int ckpt_writer_finish(struct ckpt_writer *cw);
/* Close and remove the temp file. */
void ckpt_writer_abort(struct ckpt_writer *cw);

/* ---- reading ---- */

/* Decode and validate a whole checkpoint in memory (`len` bytes): fn
 * (may be NULL) for every entry, then *info. shard_id: the shard it must
 * belong to. CKPT_EBAD with why naming the byte offset in the file and the
 * cause, CKPT_ENOMEM, CKPT_EAPPLY. */
int ckpt_decode(const uint8_t *buf, size_t len, uint32_t shard_id, ckpt_entry_fn fn, void *arg,
		struct ckpt_info *info, char *why, size_t whylen);
/* The same on dir/name; why starts with the file's path. */
int ckpt_read(const char *dir, const char *name, uint32_t shard_id, ckpt_entry_fn fn, void *arg,
	      struct ckpt_info *info, char *why, size_t whylen);

const char *ckpt_strerror(int code);

#endif
