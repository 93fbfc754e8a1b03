/* netvigil sensor, socket lifetime: creation of UDP/raw/packet sockets, close, and a
 * socket duplicated onto stdin/stdout/stderr. Follows sensor_process.c. */

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
