/* launcher/dp_ssh.h - run one command on each of many hosts over ssh
 * (libssh2), driven by one poll() loop.
 *
 * Every host goes through connect -> handshake -> host key check -> auth ->
 * exec -> running -> closed.  At most `window` hosts are between connect and
 * exec at any time, so hundreds of nodes never trip sshd's MaxStartups.
 * Host keys are checked against a known_hosts file with libssh2's knownhost
 * API: `strict` refuses an unknown or changed key, `accept-new` records an
 * unknown key (a changed key is still refused), `off` skips the check (tests
 * only).  Authentication: the ssh agent ($SSH_AUTH_SOCK) first, then the
 * identity file.  Secrets travel on the command's stdin, never in argv.
 *
 * A fan-out object is single-threaded: call dp_ssh_fanout_step() from one
 * thread (the controller's loop or a thread of its own) until
 * dp_ssh_fanout_done().  Output arrives through the callback as complete lines.
 */
#ifndef DP_SSH_H
#define DP_SSH_H

#include <stddef.h>

#include <libssh2.h>

#include "common/dp_err.h"

enum dp_ssh_hostkey_policy {
	DP_SSH_HOSTKEY_STRICT = 0,
	DP_SSH_HOSTKEY_ACCEPT_NEW = 1,
	DP_SSH_HOSTKEY_OFF = 2,
};

struct dp_ssh_opts {
	const char *user;	 /* NULL: $USER */
	int port;		 /* 0: 22 */
	const char *identity;	 /* private key file; NULL: ~/.ssh/id_ed25519, id_ecdsa, id_rsa */
	const char *known_hosts; /* NULL: ~/.ssh/known_hosts */
	enum dp_ssh_hostkey_policy hostkey_policy;
	int window;		/* concurrent handshakes; 0: 32 */
	int connect_timeout_ms; /* per host, connect to exec; 0: 20000 */
	int use_agent;		/* try $SSH_AUTH_SOCK first */
};

enum dp_ssh_state {
	DP_SSH_QUEUED = 0,
	DP_SSH_CONNECTING,
	DP_SSH_HANDSHAKE,
	DP_SSH_AUTH,
	DP_SSH_EXEC,
	DP_SSH_RUNNING,
	DP_SSH_DONE,   /* the command exited: see exit_status */
	DP_SSH_FAILED, /* never ran or lost: see error */
};

/* One host's job; the caller owns the array and the strings (borrowed until
 * the fan-out is freed).  Results are written by the fan-out. */
struct dp_ssh_job {
	const char *host;	/* name or address */
	const char *command;	/* remote shell command (quote with dp_shell_quote) */
	const char *stdin_data; /* sent then stdin stays open (EOF = "controller gone") */
	size_t stdin_len;
	/* results */
	enum dp_ssh_state state;
	int exit_status; /* DONE: the command's exit status (128+sig if killed) */
	char error[256]; /* FAILED: "host: what" */
};

/* Called for each complete output line (no newline); @is_stderr tells which stream. */
typedef void (*dp_ssh_line_cb)(void *arg, int job, int is_stderr, const char *line);

struct dp_ssh_fanout;

/* Start (nothing is connected yet).  0 and *out, or -EINVAL/-ENOMEM. */
int dp_ssh_fanout_new(const struct dp_ssh_opts *opts, struct dp_ssh_job *jobs, int njobs,
		      dp_ssh_line_cb cb, void *cb_arg, struct dp_ssh_fanout **out,
		      struct dp_err *err);
/* Make progress for at most @timeout_ms.  0, or -errno on an internal failure
 * (per-host failures are recorded in the jobs, not returned). */
int dp_ssh_fanout_step(struct dp_ssh_fanout *f, int timeout_ms, struct dp_err *err);
/* Non-zero once every job is DONE or FAILED. */
int dp_ssh_fanout_done(const struct dp_ssh_fanout *f);
/* Close the stdin of every running command (remote side sees EOF). */
void dp_ssh_fanout_close_stdin(struct dp_ssh_fanout *f);
/* Disconnect everything and free; running jobs become FAILED "disconnected". */
void dp_ssh_fanout_free(struct dp_ssh_fanout *f);

/* Run to completion (or until @timeout_ms total): new + step loop + free.
 * Returns 0 if every job ran (check exit_status), -ETIMEDOUT, or the first
 * internal error. */
int dp_ssh_run(const struct dp_ssh_opts *opts, struct dp_ssh_job *jobs, int njobs,
	       dp_ssh_line_cb cb, void *cb_arg, int timeout_ms, struct dp_err *err);

/* Check the host key @s received in its handshake against @known_hosts for
 * @host:@port under @policy (accept-new records an unknown key there).
 * 0 if accepted; -EACCES (unknown or changed key) or -EIO, with @msg (size
 * @len) saying "host key of 'HOST' ..." .  Shared by every ssh user here. */
int dp_ssh_verify_hostkey(LIBSSH2_SESSION *s, const char *host, int port, const char *known_hosts,
			  enum dp_ssh_hostkey_policy policy, char *msg, size_t len);

/* Append @arg to @dst (size @size, NUL-terminated) as one POSIX-shell word
 * in single quotes ("it's" -> 'it'\''s').  0, or -E2BIG if it does not fit. */
int dp_shell_quote(char *dst, size_t size, const char *arg);

#endif
