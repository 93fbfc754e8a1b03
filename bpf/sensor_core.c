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
 * NV_WAKEUP_NS, NV_NO_BTF, NV_FOLD_ENTRIES (repeat folding on, and the size of its map).
 *
 * The program is one text: this file (constants, shared maps, the per-thread syscall
 * scratch, record emission) followed by one file per hook family, sensor_process.c, then
 * the network hooks of the chosen hook set (sensor.hooks): sensor_net_cgroup.c (cgroup
 * programs and sock tracepoints, no syscall tracepoint; the per-thread scratch and
 * `socks` are unused there) or sensor_sockets.c, sensor_tcp.c and sensor_udp.c (syscall
 * tracepoints), in that order (sensor_sources in sensor/bpf_program.py). Record layouts
 * are in sensor.h.
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

/* a kernel-internal member at a byte offset from the running kernel's BTF (-D NV_OFF_...) */
#define NV_KREAD(dst, base, off) bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)((u64)(base) + (off)))

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

#ifdef NV_NO_BTF
BPF_HASH(inflight, u32, struct nv_inflight, 16384);     /* kernels without BTF: by tid */
#else
BPF_TASK_STORAGE(inflight, struct nv_inflight);
#endif
BPF_TABLE("lru_hash", u64, struct nv_sock, socks, 65536);

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

/* ------------------------------------------------------------ repeat folding
 *
 * With -DNV_FOLD_ENTRIES (sensor.fold_repeats), a network event like one already sent in
 * the agent's current fold period is counted in `folds` instead of sent: same process,
 * operation, result, family and type, remote address and the port that names the service
 * (the remote one; the local one on the server side, whose remote port is the client's
 * ephemeral one). The agent empties `folds` once a period (one lookup-and-delete batch)
 * and reports each count as one summary event. A key that finds the map full is not
 * folded: its events are all sent, so a repeat is never dropped uncounted. dup and
 * AF_PACKET socket events are never folded.
 */
struct nv_fold_key {
    u32 tgid;
    u32 op;
    s32 ret;            /* 0 for any success (accept's and dup's result is the new fd) */
    u16 family;
    u16 type;
    u16 port;
    u16 pad;
    u8 addr[16];
};

struct nv_fold {
    u64 count;          /* repeats counted since the agent last emptied the map */
    u64 last;           /* boot time of the latest one */
    struct nv_net_event ev;     /* the event that was sent: what the summary describes */
};

#ifdef NV_FOLD_ENTRIES
BPF_HASH(folds, struct nv_fold_key, struct nv_fold, NV_FOLD_ENTRIES);
BPF_PERCPU_ARRAY(fold_scratch, struct nv_fold, 1);
#endif

static __always_inline void fold_key(struct nv_fold_key *k, u32 tgid, s32 ret, u32 op, const struct nv_sock *s)
{
    k->tgid = tgid;
    k->op = op;
    k->ret = ret < 0 ? ret : 0;
    k->family = s->family;
    k->type = s->type;
    if (op == NV_OP_LISTEN || op == NV_OP_BIND) {
        k->port = s->lport;
        __builtin_memcpy(k->addr, s->laddr, 16);
    } else {
        k->port = (op == NV_OP_ACCEPT || op == NV_OP_ACCEPT4) ? s->lport : s->rport;
        __builtin_memcpy(k->addr, s->raddr, 16);
    }
}

/* 1 when the event is a repeat in this fold period: counted, not to be sent */
static __always_inline int fold_repeat(u32 tgid, s32 ret, u32 op, const struct nv_sock *s, u64 now,
                                       struct nv_fold_key *k)
{
#ifdef NV_FOLD_ENTRIES
    if (op == NV_OP_DUP2 || op == NV_OP_DUP3 || op == NV_OP_SOCKET)
        return 0;   /* never folded (k stays zero) */
    fold_key(k, tgid, ret, op, s);
    struct nv_fold *f = folds.lookup(k);
    if (!f)
        return 0;
    __sync_fetch_and_add(&f->count, 1);
    f->last = now;
    return 1;
#else
    return 0;
#endif
}

/* `e` is being sent (k from fold_repeat, left zero for an event that never folds):
 * later ones like it are counted, not sent */
static __always_inline void fold_sent(struct nv_fold_key *k, const struct nv_net_event *e)
{
#ifdef NV_FOLD_ENTRIES
    if (!k->op)
        return;
    int zero = 0;
    struct nv_fold *f = fold_scratch.lookup(&zero);
    if (!f)
        return;
    f->count = 0;
    f->last = e->h.ts_boot_ns;
    __builtin_memcpy(&f->ev, e, sizeof(f->ev));
    folds.insert(k, f);     /* fails when full: this key's events are all sent */
#endif
}

static __always_inline void emit_net(struct nv_inflight *f, s32 ret, s32 fd, u32 op, u64 now)
{
    struct nv_fold_key k = {};
    if (fold_repeat((u32)(bpf_get_current_pid_tgid() >> 32), ret, op, &f->s, now, &k))
        return;
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
    fold_sent(&k, e);
    events.ringbuf_submit(e, wakeup_flag(now));
}

/* ------------------------------------------ per-thread syscall scratch (enter to exit) */

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
