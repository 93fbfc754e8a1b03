/* netvigil sensor, process hooks on syscalls: the fallback for kernels whose BTF does not
 * give the offsets sensor_process.c reads (task_struct.mm, .exit_code, mm_struct.arg_*).
 * Present in the program text only then, before sensor_process.c: syscall tracepoints
 * send every syscall of every process through the kernel's tracing slow path. */

BPF_HASH(exit_codes, u32, s32, 16384);
BPF_TABLE("lru_hash", u32, struct nv_exec_event, exec_args, 1024);
BPF_PERCPU_ARRAY(exec_stash_scratch, struct nv_exec_event, 1);

static __always_inline int stash_exec_args(const char *const *argv)
{
    int zero = 0;
    struct nv_exec_event *e = exec_stash_scratch.lookup(&zero);
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

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 code = args->error_code;
    exit_codes.update(&tgid, &code);
    return 0;
}

/* the arguments stashed at execve() entry by the thread now exec'ing (old_pid) */
static __always_inline void take_exec_args(struct nv_exec_event *e, u32 old_pid)
{
    struct nv_exec_event *stash = exec_args.lookup(&old_pid);
    if (!stash)
        return;
    e->args_len = stash->args_len;
    e->args_count = stash->args_count;
    e->flags = stash->flags;
    bpf_probe_read_kernel(e->args, NV_ARGS_SIZE, stash->args);
    exec_args.delete(&old_pid);
}

/* the exit_group() code of the process, -1 when it did not call exit_group */
static __always_inline s32 exit_status(u32 tgid)
{
    s32 *code = exit_codes.lookup(&tgid);
    if (!code)
        return -1;
    s32 c = *code;
    exit_codes.delete(&tgid);
    return c;
}
