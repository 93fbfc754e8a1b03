/* netvigil sensor, UDP: the first datagram per (process, socket, destination) sent
 * with sendto/sendmsg. Follows sensor_tcp.c. */

struct nv_udp_key {
    u64 id;             /* tgid << 32 | fd */
    u64 gen;
    u8 raddr[16];
    u16 rport;
    u16 family;
    u32 pad;
};

BPF_TABLE("lru_hash", struct nv_udp_key, u8, udp_seen, 65536);


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
