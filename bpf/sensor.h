/* netvigil sensor: structs shared by the BPF programs (bpf/sensor_*.c) and the Python
 * decoder (sensor/bpf_layout.py declares these layouts once for Python; a test has
 * clang check every offset, size and constant there against this file).
 *
 * Only tracepoint arguments, helper results and UAPI structs are read: nothing here
 * dereferences a kernel-internal struct, so any recent kernel headers compile it.
 */
#ifndef NETVIGIL_SENSOR_H
#define NETVIGIL_SENSOR_H

#define NV_COMM_LEN 16
#define NV_PATH_LEN 256
#define NV_ARG_LEN 256      /* longest single argument read */
#define NV_ARGS_SIZE 1024   /* all arguments, NUL separated (power of two) */
#define NV_MAX_ARGS 20

enum nv_kind {
    NV_EXEC = 1,
    NV_FORK = 2,
    NV_EXIT = 3,
    NV_NET = 4,
};

/* NV_NET sub-kinds (which syscall or state change produced it) */
enum nv_net_op {
    NV_OP_CONNECT = 1,
    NV_OP_ACCEPT = 2,
    NV_OP_ACCEPT4 = 3,
    NV_OP_LISTEN = 4,
    NV_OP_BIND = 5,
    NV_OP_SENDTO = 6,
    NV_OP_SENDMSG = 7,
    NV_OP_DUP2 = 8,
    NV_OP_DUP3 = 9,
    NV_OP_SOCKET = 10,
    NV_OP_CONNECT_RESULT = 11,
};

/* 56 bytes, first in every event */
struct nv_header {
    u64 ts_boot_ns;
    u64 cgroup_id;
    u32 kind;
    u32 tgid;
    u32 tid;
    u32 uid;
    u32 gid;
    u32 pad;
    char comm[NV_COMM_LEN];
};

/* cgroup hook set: who listens on a TCP port of a network namespace (bpf map
 * `listeners`, filled at listen() and seeded by the agent from /proc at start) */
struct nv_listen_key {
    u32 netns;          /* the network namespace's inode number (/proc/PID/ns/net) */
    u16 port;
    u16 pad;
};

struct nv_listener {
    struct nv_header h; /* the process that listened: accepted connections are its */
    s32 fd;
    u32 pad;
    u64 ino;            /* the listening socket's inode number (socket:[N]) */
};

/* what the sensor knows about an open socket, keyed by (tgid << 32 | fd) */
struct nv_sock {
    u64 gen;            /* creation time: tells fd reuse apart */
    u16 family;         /* AF_INET, AF_INET6, AF_PACKET */
    u16 type;           /* SOCK_STREAM, SOCK_DGRAM, SOCK_RAW */
    u16 lport;          /* host byte order */
    u16 rport;
    u8 laddr[16];       /* IPv4 in the first 4 bytes */
    u8 raddr[16];
};

struct nv_net_event {
    struct nv_header h;
    s32 ret;            /* syscall result (0 or -errno; new fd for accept/dup) */
    s32 fd;
    u32 op;             /* enum nv_net_op */
    u32 aux;            /* listen backlog, dup newfd, socket domain/type */
    struct nv_sock s;
};

struct nv_exec_event {
    struct nv_header h;
    u32 old_pid;
    u16 path_len;
    u16 args_len;
    u32 args_count;
    u32 flags;          /* 1: arguments truncated */
    char path[NV_PATH_LEN];
    char args[NV_ARGS_SIZE + NV_ARG_LEN];
};

struct nv_fork_event {
    struct nv_header h;
    u32 child_pid;
    u32 pad;
};

struct nv_exit_event {
    struct nv_header h;
    s32 code;           /* exit status, or -1 when the process did not call exit */
    u32 pad;
};

#endif
