/* netvigil sensor, network hooks that run only when the event happens (hook set
 * "cgroup"): cgroup-v2 sock_addr and sock programs attached to the cgroup2 root, the
 * sock:inet_sock_set_state tracepoint and fentry on packet socket creation. No
 * syscall tracepoint: once one is enabled every syscall of every process on the node
 * takes the kernel's tracing slow path. Follows sensor_process.c in place of
 * sensor_sockets.c, sensor_tcp.c and sensor_udp.c (the "syscalls" hook set).
 *
 * State is keyed by the socket (its kernel address as an opaque number, or its cookie),
 * never by (process, fd), so no close() hook is needed:
 *   connect   cgroup/connect4/6 (the caller's context, the address as given) records
 *             the owner; the TCP outcome (SYN_SENT -> ESTABLISHED/CLOSE, often in
 *             softirq) is reported for that owner: one `connect` for a blocking
 *             socket, `connect` EINPROGRESS at SYN_SENT then `connect_result` for a
 *             non-blocking one. A CLOSE with no socket error is the owner giving up
 *             (close before the outcome): no outcome is reported. UDP connect is
 *             reported at once. A connect refused before any SYN (EPERM by a cgroup
 *             program, no route) is not reported.
 *   bind      cgroup/post_bind4/6: the bound address with its final port.
 *   listen    -> LISTEN, in listen(): reported, and the owner is remembered by
 *             (network namespace inode, port) with the socket's inode; the agent seeds
 *             the same map at start with the listeners already open (sensor/proc_sockets.py),
 *             so their accepts are reported too. A listener's close forgets it.
 *   accept    SYN_RECV -> ESTABLISHED of the new socket (softirq): reported for the
 *             owner remembered at listen for its (namespace, port). Rule: the process
 *             that called listen() on that port owns its accepted connections (a
 *             pre-fork server's workers sharing the master's listener are reported as
 *             the master; with SO_REUSEPORT listeners the one that listened last).
 *             The accepted fd is not known yet: fd.num is the listener's, rawres 0.
 *             A listener on a port picked by listen() itself (no bind) is not
 *             remembered (its port is chosen after the state change).
 *   sendto    cgroup/sendmsg4/6 (unconnected UDP with an address): the first datagram
 *             per (socket cookie, destination), before it is sent (rawres 0).
 *   socket    fentry on packet_create: AF_PACKET sockets only (fd.num -1).
 *   dup       sockets on fds 0-2 of an exec'd process (sensor_process.c, at exec).
 *
 * fd numbers and listen's backlog come from the calling syscall's registers (x86-64:
 * the user pt_regs at the top of the task's stack, offsets from BTF, the syscall number
 * checked); -1 when they cannot be read (io_uring, another architecture).
 * Kernel-internal members are read at offsets from the running kernel's BTF
 * (sensor/bpf_program.py NET_BTF_OFFSETS), never from headers.
 */

#define NV_TCP_LISTEN 10
#define NV_O_NONBLOCK 04000

/* x86-64 syscall numbers the hooks below run inside */
#define NV_NR_CONNECT 42
#define NV_NR_SENDTO 44
#define NV_NR_SENDMSG 46
#define NV_NR_BIND 49
#define NV_NR_LISTEN 50
#define NV_NR_SENDMMSG 307

/* The current syscall's number and first two arguments, from the user registers saved
 * at the top of the task's kernel stack (THREAD_SIZE 16 or 32 KiB, 0 or 16 bytes of
 * padding: each candidate is checked against the syscall number it must hold). Returns
 * the syscall number, 0 when unknown. */
static __always_inline u64 syscall_args(u64 want_a, u64 want_b, u64 *a0, u64 *a1)
{
#ifdef NV_OFF_TASK_STACK
    u64 task = bpf_get_current_task();
    u64 stack = 0;
    if (NV_KREAD(stack, task, NV_OFF_TASK_STACK) || !stack)
        return 0;
    u64 tops[4] = {16384, 16384 - 16, 32768, 32768 - 16};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        u64 regs = stack + tops[i] - NV_SIZE_PT_REGS;
        u64 nr = 0;
        /* orig_ax, di and si in one read of the block of pt_regs that holds them
         * (NV_REGS_LO/NV_REGS_BLOCK: sensor/bpf_program.py regs_block) */
        u64 blk[NV_REGS_BLOCK / 8];
        if (bpf_probe_read_kernel(blk, sizeof(blk), (void *)(regs + NV_REGS_LO)))
            continue;
        __builtin_memcpy(&nr, (u8 *)blk + (NV_OFF_REGS_ORIG_AX - NV_REGS_LO), sizeof(nr));
        if (nr != want_a && nr != want_b)
            continue;
        __builtin_memcpy(a0, (u8 *)blk + (NV_OFF_REGS_DI - NV_REGS_LO), sizeof(*a0));
        __builtin_memcpy(a1, (u8 *)blk + (NV_OFF_REGS_SI - NV_REGS_LO), sizeof(*a1));
        return nr;
    }
#endif
    return 0;
}

static __always_inline s32 syscall_fd(u64 want_a, u64 want_b, u64 *nr)
{
    u64 a0 = 0, a1 = 0;
    *nr = syscall_args(want_a, want_b, &a0, &a1);
    return *nr ? (s32)a0 : -1;
}

/* ------------------------------------------------------------------------ connect */

/* who connected a TCP socket, until its outcome */
struct nv_owner {
    struct nv_header h;
    s32 fd;
    u32 nonblock;
    struct nv_sock s;
};

struct nv_udp_key {
    u64 cookie;
    u8 raddr[16];
    u16 rport;
    u16 family;
    u32 pad;
};

BPF_TABLE("lru_hash", u64, struct nv_owner, owners, 16384);
BPF_PERCPU_ARRAY(sk_number_slot, u64, 1);
BPF_HASH(listeners, struct nv_listen_key, struct nv_listener, 16384);
BPF_TABLE("lru_hash", struct nv_udp_key, u8, udp_seen, 65536);

/* a network record: `h` the identity to report (the current process when NULL) */
static __always_inline void emit_sock(const struct nv_header *h, s32 ret, s32 fd, u32 op, u32 aux,
                                      const struct nv_sock *s, u64 now)
{
    struct nv_fold_key k = {};
    if (fold_repeat(h ? h->tgid : (u32)(bpf_get_current_pid_tgid() >> 32), ret, op, s, now, &k))
        return;
    struct nv_net_event *e = events.ringbuf_reserve(sizeof(struct nv_net_event));
    if (!e) {
        count_lost();
        return;
    }
    if (h) {
        __builtin_memcpy(&e->h, h, sizeof(e->h));
        e->h.ts_boot_ns = now;
    } else {
        fill_header(&e->h, NV_NET, now);
    }
    e->ret = ret;
    e->fd = fd;
    e->op = op;
    e->aux = aux;
    __builtin_memcpy(&e->s, s, sizeof(e->s));
    fold_sent(&k, e);
    events.ringbuf_submit(e, wakeup_flag(now));
}

/* the address a sock_addr program was handed (user_ip*, user_port: network order) */
static __always_inline void user_addr(struct bpf_sock_addr *ctx, int v6, struct nv_sock *s)
{
    if (v6) {
        s->family = NV_AF_INET6;
        u32 a[4];
        a[0] = ctx->user_ip6[0];
        a[1] = ctx->user_ip6[1];
        a[2] = ctx->user_ip6[2];
        a[3] = ctx->user_ip6[3];
        __builtin_memcpy(s->raddr, a, 16);
    } else {
        s->family = NV_AF_INET;
        u32 a = ctx->user_ip4;
        __builtin_memcpy(s->raddr, &a, 4);
    }
    s->rport = __builtin_bswap16((u16)ctx->user_port);
}

/* A socket pointer as a plain number (its kernel address, the tracepoint's skaddr): the
 * verifier allows no arithmetic on a socket pointer, but a number read back from a map
 * value is a scalar (storing the pointer needs CAP_PERFMON, as every probe read does). */
static __always_inline u64 sk_number(struct bpf_sock *bsk)
{
    int zero = 0;
    u64 *slot = sk_number_slot.lookup(&zero);
    if (!slot)
        return 0;
    *slot = (u64)bsk;
    return *(volatile u64 *)slot;
}

/* 1 when the socket's file is O_NONBLOCK (0 when unknown): sk->sk_socket->file->f_flags,
 * by loads from the kernel's typed TCP socket pointer (bpf_skc_to_tcp_sock: no probe
 * read), else (not a TCP socket, e.g. MPTCP) by three probe reads */
static __always_inline u32 sock_nonblock(struct bpf_sock *bsk, u64 sk)
{
#ifndef NV_NO_BTF
    char *tp = (char *)bpf_skc_to_tcp_sock(bsk);
    if (tp) {
        char *sock = *(char **)(tp + NV_OFF_SK_SOCKET);
        if (!sock)
            return 0;
        char *file = *(char **)(sock + NV_OFF_SOCKET_FILE);
        if (!file)
            return 0;
        u32 flags = *(u32 *)(file + NV_OFF_FILE_F_FLAGS);
        return (flags & NV_O_NONBLOCK) ? 1 : 0;
    }
#endif
    u64 sock = 0, file = 0;
    u32 flags = 0;
    if (!NV_KREAD(sock, sk, NV_OFF_SK_SOCKET) && sock && !NV_KREAD(file, sock, NV_OFF_SOCKET_FILE) && file &&
        !NV_KREAD(flags, file, NV_OFF_FILE_F_FLAGS))
        return (flags & NV_O_NONBLOCK) ? 1 : 0;
    return 0;
}

static __always_inline int connect_hook(struct bpf_sock_addr *ctx, int v6)
{
    u64 now = bpf_ktime_get_boot_ns();
    struct nv_owner o = {};
    user_addr(ctx, v6, &o.s);
    o.s.gen = now;
    u64 nr = 0;
    o.fd = syscall_fd(NV_NR_CONNECT, NV_NR_SENDTO, &nr);
    u32 type = ctx->type;
    if (type != NV_SOCK_STREAM) {
        /* UDP connect completes in the call: reported now */
        o.s.type = NV_SOCK_DGRAM;
        emit_sock(NULL, 0, o.fd, NV_OP_CONNECT, 0, &o.s, now);
        return 1;
    }
    o.s.type = NV_SOCK_STREAM;
    struct bpf_sock *bsk = ctx->sk;
    u64 sk = bsk ? sk_number(bsk) : 0;
    if (!sk)
        return 1;
    o.nonblock = sock_nonblock(bsk, sk);
    fill_header(&o.h, NV_NET, now);
    owners.update(&sk, &o);
    return 1;   /* never a verdict: enforcement's own programs decide */
}

int nv_connect4(struct bpf_sock_addr *ctx) { return connect_hook(ctx, 0); }
int nv_connect6(struct bpf_sock_addr *ctx) { return connect_hook(ctx, 1); }

/* ------------------------------------------------------------------------ bind */

static __always_inline int bind_hook(struct bpf_sock *ctx, int v6)
{
    u64 now = bpf_ktime_get_boot_ns();
    struct nv_sock s = {};
    s.gen = now;
    s.type = ctx->type == NV_SOCK_STREAM ? NV_SOCK_STREAM : NV_SOCK_DGRAM;
    s.lport = ctx->src_port;        /* host order */
    if (v6) {
        s.family = NV_AF_INET6;
        u32 a[4];
        a[0] = ctx->src_ip6[0];
        a[1] = ctx->src_ip6[1];
        a[2] = ctx->src_ip6[2];
        a[3] = ctx->src_ip6[3];
        __builtin_memcpy(s.laddr, a, 16);
    } else {
        s.family = NV_AF_INET;
        u32 a = ctx->src_ip4;
        __builtin_memcpy(s.laddr, &a, 4);
    }
    u64 nr = 0;
    s32 fd = syscall_fd(NV_NR_BIND, NV_NR_BIND, &nr);
    emit_sock(NULL, 0, fd, NV_OP_BIND, 0, &s, now);
    return 1;
}

int nv_post_bind4(struct bpf_sock *ctx) { return bind_hook(ctx, 0); }
int nv_post_bind6(struct bpf_sock *ctx) { return bind_hook(ctx, 1); }

/* ------------------------------------------------------------------------ UDP send */

static __always_inline int sendmsg_hook(struct bpf_sock_addr *ctx, int v6)
{
    struct nv_sock s = {};
    user_addr(ctx, v6, &s);
    s.type = NV_SOCK_DGRAM;
    struct nv_udp_key uk = {};
    uk.cookie = bpf_get_socket_cookie(ctx);
    uk.rport = s.rport;
    uk.family = s.family;
    __builtin_memcpy(uk.raddr, s.raddr, 16);
    if (udp_seen.lookup(&uk))
        return 1;
    u8 one = 1;
    udp_seen.update(&uk, &one);
    u64 now = bpf_ktime_get_boot_ns();
    s.gen = now;
    u64 nr = 0;
    s32 fd = syscall_fd(NV_NR_SENDTO, NV_NR_SENDMSG, &nr);
    if (!nr)
        fd = syscall_fd(NV_NR_SENDMMSG, NV_NR_SENDMMSG, &nr);
    u32 op = (nr == NV_NR_SENDMSG || nr == NV_NR_SENDMMSG) ? NV_OP_SENDMSG : NV_OP_SENDTO;
    emit_sock(NULL, 0, fd, op, 0, &s, now);
    return 1;
}

int nv_sendmsg4(struct bpf_sock_addr *ctx) { return sendmsg_hook(ctx, 0); }
int nv_sendmsg6(struct bpf_sock_addr *ctx) { return sendmsg_hook(ctx, 1); }

/* ------------------------------------------------------------------------ packet sockets */

#ifdef NV_PACKET_KFUNC
/* packet_create(net, sock, protocol, kern), in socket(): AF_PACKET sockets only (fentry:
 * costs nothing for any other socket) */
KFUNC_PROBE(packet_create, void *net, void *sock, int protocol, int kern)
{
    if (kern)
        return 0;   /* a socket the kernel makes for itself */
    s16 type = 0;
    if (NV_KREAD(type, sock, NV_OFF_SOCKET_TYPE))
        return 0;
    struct nv_sock s = {};
    u64 now = bpf_ktime_get_boot_ns();
    s.gen = now;
    s.family = NV_AF_PACKET;
    s.type = (u16)type;
    emit_sock(NULL, 0, -1, NV_OP_SOCKET, ((u32)NV_AF_PACKET << 16) | (u16)type, &s, now);
    return 0;
}
#endif

/* ------------------------------------------------------------------------ TCP states */

/* the local and remote ends of the tracepoint's socket (a macro: BCC declares the
 * tracepoint's argument struct only inside TRACEPOINT_PROBE) */
#define NV_TP_ENDS(args, s) do {                                        \
        (s)->family = (args)->family;                                   \
        (s)->type = NV_SOCK_STREAM;                                     \
        (s)->lport = (args)->sport;                                     \
        (s)->rport = (args)->dport;                                     \
        if ((args)->family == NV_AF_INET6) {                            \
            __builtin_memcpy((s)->laddr, (args)->saddr_v6, 16);         \
            __builtin_memcpy((s)->raddr, (args)->daddr_v6, 16);         \
        } else {                                                        \
            __builtin_memcpy((s)->laddr, (args)->saddr, 4);             \
            __builtin_memcpy((s)->raddr, (args)->daddr, 4);             \
        }                                                               \
    } while (0)

/* (network namespace inode, port): what /proc shows too, so the agent can seed the
 * listeners that predate it */
static __always_inline int listen_key(u64 sk, u16 port, struct nv_listen_key *k)
{
    u64 net = 0;
    u32 inum = 0;
    if (NV_KREAD(net, sk, NV_OFF_SKC_NET) || !net ||
        NV_KREAD(inum, net, NV_OFF_NET_NS + NV_OFF_NS_COMMON_INUM))
        return -1;
    k->netns = inum;
    k->port = port;
    return 0;
}

/* the inode number of a socket's file (its socket:[N] in /proc/PID/fd), 0 when unknown */
static __always_inline u64 sock_ino(u64 sk)
{
    u64 sock = 0, file = 0, inode = 0, ino = 0;
    if (NV_KREAD(sock, sk, NV_OFF_SK_SOCKET) || !sock || NV_KREAD(file, sock, NV_OFF_SOCKET_FILE) || !file ||
        NV_KREAD(inode, file, NV_OFF_FILE_F_INODE) || !inode)
        return 0;
    NV_KREAD(ino, inode, NV_OFF_INODE_I_INO);
    return ino;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP)
        return 0;
    int oldstate = args->oldstate;
    int newstate = args->newstate;
    u64 sk = (u64)args->skaddr;
    if (newstate == NV_TCP_SYN_SENT) {
        /* in connect() (or a Fast Open sendto): the local address is chosen */
        struct nv_owner *o = owners.lookup(&sk);
        if (!o)
            return 0;
        if (args->family == NV_AF_INET6)
            __builtin_memcpy(o->s.laddr, args->saddr_v6, 16);
        else
            __builtin_memcpy(o->s.laddr, args->saddr, 4);
        if (o->nonblock)
            emit_sock(&o->h, -NV_EINPROGRESS, o->fd, NV_OP_CONNECT, 0, &o->s, bpf_ktime_get_boot_ns());
        return 0;
    }
    if (oldstate == NV_TCP_SYN_SENT) {
        /* the outcome of an active open, in whatever context: for the owner */
        struct nv_owner *o = owners.lookup(&sk);
        if (!o)
            return 0;
        s32 result = 0;
        if (newstate != NV_TCP_ESTABLISHED) {
            s32 err = 0;
            NV_KREAD(err, sk, NV_OFF_SK_ERR);
            if (err <= 0) {
                owners.delete(&sk);
                return 0;   /* closed by its owner before any outcome */
            }
            result = -err;
        }
        /* emitted from the map value (no copy of the owner), forgotten after */
        o->s.lport = args->sport;
        emit_sock(&o->h, result, o->fd, o->nonblock ? NV_OP_CONNECT_RESULT : NV_OP_CONNECT, 0, &o->s,
                  bpf_ktime_get_boot_ns());
        owners.delete(&sk);
        return 0;
    }
    if (newstate == NV_TCP_LISTEN) {
        /* in listen(): the caller listens; its port is 0 when listen() picks it */
        u64 now = bpf_ktime_get_boot_ns();
        struct nv_sock s = {};
        NV_TP_ENDS(args, &s);
        s.rport = 0;
        __builtin_memset(s.raddr, 0, 16);
        s.gen = now;
        u64 fd = 0, backlog = 0;
        s32 nfd = syscall_args(NV_NR_LISTEN, NV_NR_LISTEN, &fd, &backlog) ? (s32)fd : -1;
        emit_sock(NULL, 0, nfd, NV_OP_LISTEN, (u32)backlog, &s, now);
        struct nv_listen_key k = {};
        if (!s.lport || listen_key(sk, s.lport, &k))
            return 0;
        struct nv_listener l = {};
        fill_header(&l.h, NV_NET, now);
        l.fd = nfd;
        l.ino = sock_ino(sk);
        listeners.update(&k, &l);
        return 0;
    }
    if (oldstate == NV_TCP_LISTEN && newstate == NV_TCP_CLOSE) {
        /* (a new connection cloned from the listener also leaves LISTEN, for SYN_RECV) */
        struct nv_listen_key k = {};
        if (listen_key(sk, args->sport, &k))
            return 0;
        struct nv_listener *l = listeners.lookup(&k);
        if (l && l->ino && l->ino == sock_ino(sk))
            listeners.delete(&k);
        return 0;
    }
    if (oldstate == NV_TCP_SYN_RECV && newstate == NV_TCP_ESTABLISHED) {
        /* a passive open (usually softirq): for the process that listens on the port */
        struct nv_listen_key k = {};
        if (listen_key(sk, args->sport, &k))
            return 0;
        struct nv_listener *l = listeners.lookup(&k);
        if (!l)
            return 0;
        u64 now = bpf_ktime_get_boot_ns();
        struct nv_sock s = {};
        NV_TP_ENDS(args, &s);
        s.gen = now;
        emit_sock(&l->h, 0, l->fd, NV_OP_ACCEPT, 0, &s, now);
    }
    return 0;
}
