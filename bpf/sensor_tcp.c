/* netvigil sensor, TCP (and connect/bind of any IP socket): connect and its outcome,
 * the state changes, accept, bind, listen. Follows sensor_sockets.c. */

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

BPF_TABLE("lru_hash", u64, struct nv_conn, conns, 16384);
BPF_TABLE("lru_hash", struct nv_peer_key, struct nv_peer_val, peers, 16384);

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
    u64 now = bpf_ktime_get_boot_ns();
    struct nv_fold_key k = {};
    if (fold_repeat(o.h.tgid, result, NV_OP_CONNECT_RESULT, &o.s, now, &k))
        return;
    struct nv_net_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return;
    }
    __builtin_memcpy(&e->h, &o.h, sizeof(e->h));
    e->h.ts_boot_ns = now;
    e->ret = result;
    e->fd = o.fd;
    e->op = NV_OP_CONNECT_RESULT;
    e->aux = 0;
    __builtin_memcpy(&e->s, &o.s, sizeof(e->s));
    e->s.lport = lport;
    fold_sent(&k, e);
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
