/* netvigil sensor: process and network activity from tracepoints only.
 *
 * One ring buffer (`events`), in-kernel per-CPU counters of lost events (`lost`).
 * Syscall enter/exit pairs share one per-thread scratch (`inflight`, task storage: no
 * map update or delete per syscall); sockets are tracked per (tgid, fd) in `socks` so
 * later syscalls (listen, sendto, dup2) know what they act on. A TCP connect's outcome is
 * attributed to the connecting process: in the connecting thread when it completes there
 * (the common case), otherwise through `conns`, keyed by the socket address as an opaque
 * number, so state changes seen in softirq context are never attributed to whoever was
 * on the CPU.
 *
 * Cost matters on every hooked syscall: one clock read per program, one user read per
 * IPv4 sockaddr, lookups before deletes, no per-syscall hash updates.
 *
 * Task storage needs BTF (for bpf_get_current_task_btf; the task pointer is only handed
 * to the task storage helper, never dereferenced); -DNV_NO_BTF falls back to a hash by
 * thread id. Build-time knobs (-D): NV_RINGBUF_PAGES (ring buffer size in pages),
 * NV_WAKEUP_NS, NV_NO_BTF.
 */
#include <uapi/linux/in.h>
#include <uapi/linux/in6.h>
#include <uapi/linux/socket.h>
#include <uapi/linux/errno.h>
#include <linux/socket.h>
#include "sensor.h"

#ifndef NV_RINGBUF_PAGES
#define NV_RINGBUF_PAGES 2048
#endif

#define NV_AF_INET 2
#define NV_AF_INET6 10
#define NV_AF_PACKET 17
#define NV_SOCK_STREAM 1
#define NV_SOCK_DGRAM 2
#define NV_CLONE_THREAD 0x00010000
#define NV_TCP_ESTABLISHED 1
#define NV_TCP_SYN_SENT 2
#define NV_TCP_SYN_RECV 3
#define NV_TCP_CLOSE 7
#define NV_EINPROGRESS 115

#ifndef NV_WAKEUP_NS
#define NV_WAKEUP_NS 10000000
#endif
#define NV_RB_NO_WAKEUP 1
#define NV_RB_FORCE_WAKEUP 2

BPF_RINGBUF_OUTPUT(events, NV_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(lost, u64, 1);
BPF_PERCPU_ARRAY(last_wakeup, u64, 1);

struct nv_inflight {
    u32 op;
    s32 fd;
    u64 uptr;           /* user pointer kept from enter to exit (sockaddr) */
    u32 aux;
    u32 seen_syn;       /* connect: the kernel moved the socket to SYN_SENT */
    u64 skaddr;
    s32 result;         /* connect: outcome seen in this thread's context, or NV_PENDING */
    u32 pad;
    struct nv_sock s;
};

/* A TCP connect whose outcome is not seen in the connecting thread, keyed by the socket
 * address. Whichever side comes first inserts its entry (insert-if-absent, serialised by
 * the map); the second finds it there and reports the outcome:
 *   NV_CONN_OWNER: connect() returned EINPROGRESS first; the entry says who connected.
 *   NV_CONN_EARLY: the outcome came first (softirq, connect() still running or asleep);
 *                  the entry holds it for sys_exit_connect. */
#define NV_CONN_OWNER 1
#define NV_CONN_EARLY 2
struct nv_conn {
    u32 kind;
    s32 result;             /* EARLY: the outcome (0 or -errno) */
    u16 lport;              /* EARLY: the local port the kernel chose */
    u16 pad[3];
    struct nv_header h;     /* OWNER: identity of the process that connected */
    s32 fd;
    u32 pad2;
    struct nv_sock s;
};

struct nv_peer_key {
    u8 raddr[16];
    u16 rport;
    u16 family;
    u32 pad;
};

struct nv_peer_val {
    u8 laddr[16];
    u16 lport;
    u16 pad[3];
};

struct nv_udp_key {
    u64 id;             /* tgid << 32 | fd */
    u64 gen;
    u8 raddr[16];
    u16 rport;
    u16 family;
    u32 pad;
};

#ifdef NV_NO_BTF
BPF_HASH(inflight, u32, struct nv_inflight, 16384);     /* kernels without BTF: by tid */
#else
BPF_TASK_STORAGE(inflight, struct nv_inflight);
#endif
BPF_TABLE("lru_hash", u64, struct nv_sock, socks, 65536);
BPF_TABLE("lru_hash", u64, struct nv_conn, conns, 16384);
BPF_TABLE("lru_hash", struct nv_peer_key, struct nv_peer_val, peers, 16384);
BPF_TABLE("lru_hash", struct nv_udp_key, u8, udp_seen, 65536);
BPF_TABLE("lru_hash", u32, u64, clone_flags, 8192);
BPF_HASH(exit_codes, u32, s32, 16384);
BPF_PERCPU_ARRAY(exec_scratch, struct nv_exec_event, 1);
BPF_TABLE("lru_hash", u32, struct nv_exec_event, exec_args, 1024);

static __always_inline void count_lost(void)
{
    int zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n)
        (*n)++;
}

/* Wake the consumer at most once per NV_WAKEUP_NS (10 ms) per CPU: a wakeup per event costs
 * the producing task more than the event itself. The consumer also drains on its poll
 * timeout, so a record submitted without a wakeup waits at most that long. */
static __always_inline u64 wakeup_flag(u64 now)
{
    int zero = 0;
    u64 *last = last_wakeup.lookup(&zero);
    if (!last)
        return 0;
    if (now - *last < NV_WAKEUP_NS)
        return NV_RB_NO_WAKEUP;
    *last = now;
    return NV_RB_FORCE_WAKEUP;
}

/* `now` is bpf_ktime_get_boot_ns(), read once per program (clock reads are not free) */
static __always_inline void fill_header(struct nv_header *h, u32 kind, u64 now)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 ug = bpf_get_current_uid_gid();
    h->ts_boot_ns = now;
    h->cgroup_id = bpf_get_current_cgroup_id();
    h->kind = kind;
    h->tgid = id >> 32;
    h->tid = (u32)id;
    h->uid = (u32)ug;
    h->gid = ug >> 32;
    h->pad = 0;
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

static __always_inline u64 sock_id(u32 tgid, s32 fd)
{
    return ((u64)tgid << 32) | (u32)fd;
}

/* Read a user sockaddr into addr/port; returns the family, 0 when not IP. */
static __always_inline u16 read_sockaddr(u64 uptr, u8 *addr, u16 *port)
{
    if (!uptr)
        return 0;
    /* one user read for IPv4 (sockaddr_in is 16 bytes, the shortest IP sockaddr) */
    struct sockaddr_in sin = {};
    if (bpf_probe_read_user(&sin, sizeof(sin), (void *)uptr))
        return 0;
    u16 family = sin.sin_family;
    if (family == NV_AF_INET) {
        __builtin_memcpy(addr, &sin.sin_addr.s_addr, 4);
        *port = __builtin_bswap16(sin.sin_port);
        return family;
    }
    if (family == NV_AF_INET6) {
        struct sockaddr_in6 sin6 = {};
        if (bpf_probe_read_user(&sin6, sizeof(sin6), (void *)uptr))
            return 0;
        __builtin_memcpy(addr, &sin6.sin6_addr, 16);
        *port = __builtin_bswap16(sin6.sin6_port);
        return family;
    }
    return 0;
}

static __always_inline void emit_net(struct nv_inflight *f, s32 ret, s32 fd, u32 op, u64 now)
{
    struct nv_net_event *e = events.ringbuf_reserve(sizeof(struct nv_net_event));
    if (!e) {
        count_lost();
        return;
    }
    fill_header(&e->h, NV_NET, now);
    e->ret = ret;
    e->fd = fd;
    e->op = op;
    e->aux = f->aux;
    __builtin_memcpy(&e->s, &f->s, sizeof(e->s));
    events.ringbuf_submit(e, wakeup_flag(now));
}

/* ---------------------------------------------------------------- processes */

static __always_inline int stash_exec_args(const char *const *argv)
{
    int zero = 0;
    struct nv_exec_event *e = exec_scratch.lookup(&zero);
    if (!e)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 off = 0;
    u32 count = 0;
    e->flags = 0;
#pragma unroll
    for (int i = 0; i < NV_MAX_ARGS; i++) {
        const char *arg = NULL;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
            goto done;
        if (off >= NV_ARGS_SIZE) {
            e->flags = 1;
            goto done;
        }
        int n = bpf_probe_read_user_str(&e->args[off & (NV_ARGS_SIZE - 1)], NV_ARG_LEN, arg);
        if (n <= 0)
            goto done;
        off += n;
        count++;
    }
    e->flags = 1;   /* more than NV_MAX_ARGS arguments */
done:
    e->args_len = off > NV_ARGS_SIZE ? NV_ARGS_SIZE : off;
    e->args_count = count;
    exec_args.update(&tid, e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    return stash_exec_args((const char *const *)args->argv);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
    return stash_exec_args((const char *const *)args->argv);
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 old = args->old_pid;
    struct nv_exec_event *stash = exec_args.lookup(&old);
    int zero = 0;
    struct nv_exec_event *e = stash ? stash : exec_scratch.lookup(&zero);
    if (!e)
        return 0;
    if (!stash) {
        e->args_len = 0;
        e->args_count = 0;
        e->flags = 0;
    }
    u64 now = bpf_ktime_get_boot_ns();
    fill_header(&e->h, NV_EXEC, now);
    e->old_pid = old;
    u32 loc = args->data_loc_filename;
    int n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), (void *)args + (loc & 0xFFFF));
    e->path_len = n > 0 ? n : 0;
    u32 len = offsetof(struct nv_exec_event, args) + (e->args_len & (NV_ARGS_SIZE - 1));
    if (e->args_len >= NV_ARGS_SIZE)
        len = offsetof(struct nv_exec_event, args) + NV_ARGS_SIZE;
    if (events.ringbuf_output(e, len, wakeup_flag(now)))
        count_lost();
    if (stash)
        exec_args.delete(&old);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = args->clone_flags;
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = 0;
    bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);  /* clone_args.flags */
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *flags = clone_flags.lookup(&tid);
    if (flags) {
        u64 f = *flags;
        clone_flags.delete(&tid);
        if (f & NV_CLONE_THREAD)
            return 0;
    }
    struct nv_fork_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
    }
    u64 now = bpf_ktime_get_boot_ns();
    fill_header(&e->h, NV_FORK, now);
    e->child_pid = args->child_pid;
    e->pad = 0;
    events.ringbuf_submit(e, wakeup_flag(now));
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 code = args->error_code;
    exit_codes.update(&tgid, &code);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    if (!args->group_dead)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 *code = exit_codes.lookup(&tgid);
    struct nv_exit_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
    } else {
        u64 now = bpf_ktime_get_boot_ns();
        fill_header(&e->h, NV_EXIT, now);
        e->code = code ? *code : -1;
        e->pad = 0;
        events.ringbuf_submit(e, wakeup_flag(now));
    }
    if (code)
        exit_codes.delete(&tgid);
    return 0;
}

/* ---------------------------------------------------------------- sockets */

#define NV_PENDING 1    /* nv_inflight.result before the connect's outcome is known */

/* The calling thread's scratch, kept from a syscall's enter to its exit (task storage:
 * no hash update or delete per syscall; the kernel frees it when the thread exits). The
 * task pointer is only handed to the helper, never dereferenced. */
static __always_inline struct nv_inflight *scratch(u64 flags)
{
#ifdef NV_NO_BTF
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct nv_inflight *f = inflight.lookup(&tid);
    if (!f && flags) {
        struct nv_inflight zero = {};
        inflight.update(&tid, &zero);
        f = inflight.lookup(&tid);
    }
    return f;
#else
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    return inflight.task_storage_get(task, 0, flags);
#endif
}

static __always_inline struct nv_inflight *begin(u32 op, s32 fd, u64 uptr, u32 aux)
{
    struct nv_inflight *f = scratch(BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!f) {
        count_lost();   /* no per-thread state (busy or out of memory): the event is lost */
        return NULL;
    }
    __builtin_memset(f, 0, sizeof(*f));
    f->op = op;
    f->fd = fd;
    f->uptr = uptr;
    f->aux = aux;
    f->result = NV_PENDING;
    return f;
}

static __always_inline struct nv_inflight *finish(u32 op)
{
    struct nv_inflight *f = scratch(0);
    if (!f || f->op != op)
        return NULL;
    return f;
}

static __always_inline void finish_done(struct nv_inflight *f)
{
#ifdef NV_NO_BTF
    u32 tid = (u32)bpf_get_current_pid_tgid();
    inflight.delete(&tid);      /* a hash entry per thread would outlive the thread */
#else
    f->op = 0;
#endif
}

TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
    u16 family = args->family;
    u16 type = args->type & 0xF;
    /* TCP sockets are recorded by connect/accept/bind; only UDP/raw IP sockets (whose type
     * sendto needs) and packet sockets are worth a map entry at creation */
    if (family != NV_AF_PACKET && !((family == NV_AF_INET || family == NV_AF_INET6) && type != NV_SOCK_STREAM))
        return 0;
    begin(NV_OP_SOCKET, -1, 0, ((u32)family << 16) | type);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket)
{
    struct nv_inflight *f = finish(NV_OP_SOCKET);
    if (!f)
        return 0;
    s32 ret = args->ret;
    u16 family = f->aux >> 16;
    u16 type = f->aux & 0xF;   /* strip SOCK_NONBLOCK / SOCK_CLOEXEC */
    if (ret >= 0) {
        u64 now = bpf_ktime_get_boot_ns();
        struct nv_sock s = {};
        s.gen = now;
        s.family = family;
        s.type = type;
        u64 key = sock_id(bpf_get_current_pid_tgid() >> 32, ret);
        socks.update(&key, &s);
        if (family == NV_AF_PACKET) {
            __builtin_memcpy(&f->s, &s, sizeof(s));
            emit_net(f, ret, ret, NV_OP_SOCKET, now);
        }
    }
    finish_done(f);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 key = sock_id(bpf_get_current_pid_tgid() >> 32, args->fd);
    if (socks.lookup(&key))     /* most closed fds are not sockets: lookups take no lock */
        socks.delete(&key);
    return 0;
}

/* connect/bind enter: remember the socket and the address it names (remote or local) */
static __always_inline int begin_with_addr(u32 op, s32 fd, u64 uaddr, int local)
{
    u8 addr[16] = {};
    u16 port = 0;
    u16 family = read_sockaddr(uaddr, addr, &port);
    if (!family)
        return 0;
    struct nv_inflight *f = begin(op, fd, 0, 0);
    if (!f)
        return 0;
    u64 key = sock_id(bpf_get_current_pid_tgid() >> 32, fd);
    struct nv_sock *known = socks.lookup(&key);
    if (known)
        __builtin_memcpy(&f->s, known, sizeof(f->s));
    f->s.family = family;
    if (local) {
        f->s.lport = port;
        __builtin_memcpy(f->s.laddr, addr, 16);
    } else {
        f->s.rport = port;
        __builtin_memcpy(f->s.raddr, addr, 16);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    return begin_with_addr(NV_OP_CONNECT, args->fd, (u64)args->uservaddr, 0);
}

/* Report a connect's outcome as its own event, attributed to the process of the OWNER
 * entry for the socket. Only the side whose delete of the entry succeeds reports. */
static __always_inline void report_to_owner(u64 skaddr, s32 result, u16 lport)
{
    struct nv_conn *found = conns.lookup(&skaddr);
    if (!found || found->kind != NV_CONN_OWNER)
        return;
    struct nv_conn o = {};
    __builtin_memcpy(&o, found, sizeof(o));
    if (conns.delete(&skaddr) != 0)
        return;
    struct nv_net_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return;
    }
    u64 now = bpf_ktime_get_boot_ns();
    __builtin_memcpy(&e->h, &o.h, sizeof(e->h));
    e->h.ts_boot_ns = now;
    e->ret = result;
    e->fd = o.fd;
    e->op = NV_OP_CONNECT_RESULT;
    e->aux = 0;
    __builtin_memcpy(&e->s, &o.s, sizeof(e->s));
    e->s.lport = lport;
    events.ringbuf_submit(e, wakeup_flag(now));
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP)
        return 0;
    int oldstate = args->oldstate;
    int newstate = args->newstate;
    u64 skaddr = (u64)args->skaddr;
    if (newstate == NV_TCP_SYN_SENT) {
        /* a new connection on this socket (address): whatever an earlier one left in
         * `conns` (an outcome no connect() collected, e.g. TCP Fast Open) is dead */
        if (conns.lookup(&skaddr))
            conns.delete(&skaddr);
        /* process context: tcp_v{4,6}_connect inside connect() */
        struct nv_inflight *f = scratch(0);
        if (!f || f->op != NV_OP_CONNECT)
            return 0;
        f->seen_syn = 1;
        f->skaddr = skaddr;
        if (args->family == NV_AF_INET6)
            __builtin_memcpy(f->s.laddr, args->saddr_v6, 16);
        else
            __builtin_memcpy(f->s.laddr, args->saddr, 4);
        return 0;
    }
    if (oldstate == NV_TCP_SYN_RECV && newstate == NV_TCP_ESTABLISHED) {
        /* passive open, usually softirq: remember the local end by peer for accept() */
        struct nv_peer_key k = {};
        struct nv_peer_val v = {};
        k.family = args->family;
        k.rport = args->dport;
        v.lport = args->sport;
        if (args->family == NV_AF_INET6) {
            __builtin_memcpy(k.raddr, args->daddr_v6, 16);
            __builtin_memcpy(v.laddr, args->saddr_v6, 16);
        } else {
            __builtin_memcpy(k.raddr, args->daddr, 4);
            __builtin_memcpy(v.laddr, args->saddr, 4);
        }
        peers.update(&k, &v);
        return 0;
    }
    if (oldstate != NV_TCP_SYN_SENT)
        return 0;
    /* outcome of an active open (the local port is chosen after SYN_SENT is set) */
    s32 result = newstate == NV_TCP_ESTABLISHED ? 0 : -ECONNREFUSED;
    u16 lport = args->sport;
    struct nv_inflight *f = scratch(0);
    if (f && f->op == NV_OP_CONNECT && f->skaddr == skaddr) {
        f->result = result;      /* in the connecting thread: connect() reports it */
        f->s.lport = lport;
        return 0;
    }
    /* any other context (softirq on behalf of a sleeping or returned connect): leave the
     * outcome for connect(), unless it returned EINPROGRESS first and left its owner */
    struct nv_conn early = {};
    early.kind = NV_CONN_EARLY;
    early.result = result;
    early.lport = lport;
    if (conns.insert(&skaddr, &early) != 0)
        report_to_owner(skaddr, result, lport);
    return 0;
}

/* Take out an outcome the state change left in `conns` (kind EARLY) into result/lport;
 * both are left as they are when there is none. */
static __always_inline void take_early(u64 skaddr, s32 *result, u16 *lport)
{
    struct nv_conn *c = conns.lookup(&skaddr);
    if (!c || c->kind != NV_CONN_EARLY)
        return;
    *result = c->result;
    *lport = c->lport;
    conns.delete(&skaddr);
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    struct nv_inflight *f = finish(NV_OP_CONNECT);
    if (!f)
        return 0;
    s32 ret = args->ret;
    u64 now = bpf_ktime_get_boot_ns();
    u64 skaddr = f->skaddr;
    s32 outcome = f->result;    /* NV_PENDING unless seen in this thread */
    if (f->seen_syn) {
        f->s.type = NV_SOCK_STREAM;
        if (outcome == NV_PENDING)
            take_early(skaddr, &outcome, &f->s.lport);   /* leaves both as they are if none */
    } else if (!f->s.type) {
        f->s.type = NV_SOCK_DGRAM;   /* no SYN: UDP, or a TCP connect refused early */
    }
    emit_net(f, ret, f->fd, NV_OP_CONNECT, now);
    if (ret == 0 || ret == -NV_EINPROGRESS) {
        u64 key = sock_id(bpf_get_current_pid_tgid() >> 32, f->fd);
        struct nv_sock s = f->s;
        if (!s.gen)
            s.gen = now;
        socks.update(&key, &s);
    }
    if (f->seen_syn && ret == -NV_EINPROGRESS) {
        if (outcome == NV_PENDING) {
            /* the outcome comes later, from softirq: leave who to attribute it to */
            struct nv_conn o = {};
            o.kind = NV_CONN_OWNER;
            fill_header(&o.h, NV_NET, now);
            o.fd = f->fd;
            __builtin_memcpy(&o.s, &f->s, sizeof(o.s));
            if (conns.insert(&skaddr, &o) != 0)   /* the state change came first after all */
                take_early(skaddr, &outcome, &f->s.lport);
        }
        if (outcome != NV_PENDING)      /* completed before connect() returned */
            emit_net(f, outcome, f->fd, NV_OP_CONNECT_RESULT, now);
    }
    finish_done(f);
    return 0;
}

static __always_inline int accept_enter(u32 op, s32 fd, u64 uaddr)
{
    begin(op, fd, uaddr, 0);
    return 0;
}

static __always_inline int accept_exit(u32 op, s32 ret)
{
    struct nv_inflight *f = finish(op);
    if (!f)
        return 0;
    if (ret < 0) {
        finish_done(f);
        return 0;
    }
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 lkey = sock_id(tgid, f->fd);
    struct nv_sock *listener = socks.lookup(&lkey);
    if (listener) {
        f->s.family = listener->family;
        f->s.lport = listener->lport;
        __builtin_memcpy(f->s.laddr, listener->laddr, 16);
    }
    u16 family = read_sockaddr(f->uptr, f->s.raddr, &f->s.rport);
    if (family) {
        f->s.family = family;
        struct nv_peer_key k = {};
        k.family = family;
        k.rport = f->s.rport;
        __builtin_memcpy(k.raddr, f->s.raddr, 16);
        struct nv_peer_val *v = peers.lookup(&k);
        if (v) {
            f->s.lport = v->lport;
            __builtin_memcpy(f->s.laddr, v->laddr, 16);
            peers.delete(&k);
        }
    }
    if (!f->s.family) {
        finish_done(f);
        return 0;   /* not an IP socket (unix) */
    }
    u64 now = bpf_ktime_get_boot_ns();
    f->s.type = NV_SOCK_STREAM;
    f->s.gen = now;
    u64 key = sock_id(tgid, ret);
    socks.update(&key, &f->s);
    emit_net(f, ret, f->fd, op, now);
    finish_done(f);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept)
{
    return accept_enter(NV_OP_ACCEPT, args->fd, (u64)args->upeer_sockaddr);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
    return accept_exit(NV_OP_ACCEPT, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept4)
{
    return accept_enter(NV_OP_ACCEPT4, args->fd, (u64)args->upeer_sockaddr);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
    return accept_exit(NV_OP_ACCEPT4, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_bind)
{
    return begin_with_addr(NV_OP_BIND, args->fd, (u64)args->umyaddr, 1);
}

TRACEPOINT_PROBE(syscalls, sys_exit_bind)
{
    struct nv_inflight *f = finish(NV_OP_BIND);
    if (!f)
        return 0;
    s32 ret = args->ret;
    u64 now = bpf_ktime_get_boot_ns();
    if (ret == 0) {
        u64 key = sock_id(bpf_get_current_pid_tgid() >> 32, f->fd);
        if (!f->s.gen)
            f->s.gen = now;
        socks.update(&key, &f->s);
    }
    emit_net(f, ret, f->fd, NV_OP_BIND, now);
    finish_done(f);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_listen)
{
    begin(NV_OP_LISTEN, args->fd, 0, args->backlog);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_listen)
{
    struct nv_inflight *f = finish(NV_OP_LISTEN);
    if (!f)
        return 0;
    u64 key = sock_id(bpf_get_current_pid_tgid() >> 32, f->fd);
    struct nv_sock *known = socks.lookup(&key);
    if (known)
        __builtin_memcpy(&f->s, known, sizeof(f->s));
    f->s.type = NV_SOCK_STREAM;
    emit_net(f, args->ret, f->fd, NV_OP_LISTEN, bpf_ktime_get_boot_ns());
    finish_done(f);
    return 0;
}

/* UDP: report the first datagram per (process, socket, destination) */
/* the dedup key of a datagram: (process, socket, its generation, destination) */
static __always_inline void udp_key(struct nv_udp_key *uk, u64 id, const struct nv_sock *s)
{
    uk->id = id;
    uk->gen = s->gen;
    uk->rport = s->rport;
    uk->family = s->family;
    __builtin_memcpy(uk->raddr, s->raddr, 16);
}

static __always_inline int udp_enter(u32 op, s32 fd, u64 uaddr)
{
    u8 addr[16] = {};
    u16 port = 0;
    u16 family = read_sockaddr(uaddr, addr, &port);
    if (!family)
        return 0;
    u64 key = sock_id(bpf_get_current_pid_tgid() >> 32, fd);
    struct nv_sock s = {};
    struct nv_sock *known = socks.lookup(&key);
    if (known) {
        if (known->type != NV_SOCK_DGRAM)
            return 0;
        __builtin_memcpy(&s, known, sizeof(s));
    }
    s.family = family;
    s.type = NV_SOCK_DGRAM;
    s.rport = port;
    __builtin_memcpy(s.raddr, addr, 16);
    struct nv_udp_key uk = {};
    udp_key(&uk, key, &s);
    if (udp_seen.lookup(&uk))
        return 0;
    struct nv_inflight *f = begin(op, fd, 0, 0);
    if (f)
        __builtin_memcpy(&f->s, &s, sizeof(f->s));
    return 0;
}

static __always_inline int udp_exit(u32 op, s64 ret)
{
    struct nv_inflight *f = finish(op);
    if (!f)
        return 0;
    if (ret >= 0) {
        struct nv_udp_key uk = {};
        udp_key(&uk, sock_id(bpf_get_current_pid_tgid() >> 32, f->fd), &f->s);
        u8 one = 1;
        udp_seen.update(&uk, &one);
    }
    emit_net(f, ret < 0 ? (s32)ret : 0, f->fd, op, bpf_ktime_get_boot_ns());
    finish_done(f);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
    return udp_enter(NV_OP_SENDTO, args->fd, (u64)args->addr);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendto)
{
    return udp_exit(NV_OP_SENDTO, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
    struct user_msghdr m = {};
    if (bpf_probe_read_user(&m, sizeof(m), (void *)args->msg))
        return 0;
    return udp_enter(NV_OP_SENDMSG, args->fd, (u64)m.msg_name);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg)
{
    return udp_exit(NV_OP_SENDMSG, args->ret);
}

/* a socket duplicated onto stdin/stdout/stderr: the reverse-shell signal */
static __always_inline int dup_enter(u32 op, s32 oldfd, s32 newfd)
{
    if (newfd < 0 || newfd > 2)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 key = sock_id(tgid, oldfd);
    struct nv_sock *known = socks.lookup(&key);
    if (!known || known->family == NV_AF_PACKET)
        return 0;
    struct nv_inflight f = {};
    __builtin_memcpy(&f.s, known, sizeof(f.s));
    f.aux = newfd;
    u64 nkey = sock_id(tgid, newfd);
    socks.update(&nkey, &f.s);
    emit_net(&f, newfd, oldfd, op, bpf_ktime_get_boot_ns());
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_dup2)
{
    return dup_enter(NV_OP_DUP2, args->oldfd, args->newfd);
}

TRACEPOINT_PROBE(syscalls, sys_enter_dup3)
{
    return dup_enter(NV_OP_DUP3, args->oldfd, args->newfd);
}
