"""Falco fields that netvigil does not provide.

A rule that uses one of these is *unsupported* (reported by rule and field, skippable with
``skip_unsupported``); a name that is neither here nor in :mod:`rules.fields` is *unknown*
(a load error with a did-you-mean). ``evt.arg.*`` / ``evt.rawarg.*`` names not in the
catalogue are unsupported too (Falco accepts any syscall argument name).
"""
from __future__ import annotations

FALCO_ONLY_FIELDS: frozenset[str] = frozenset("""
evt.args evt.buffer evt.buflen evt.category evt.count evt.count.error evt.count.error.file
evt.count.error.memory evt.count.error.net evt.count.error.other evt.count.exit evt.cpu
evt.datetime evt.datetime.s evt.deltatime evt.deltatime.ns evt.deltatime.s evt.dir
evt.failed evt.hostname evt.info evt.io_dir evt.is_io evt.is_io_read evt.is_io_write
evt.is_open_create evt.is_open_exec evt.is_open_read evt.is_open_write evt.is_syslog
evt.is_wait evt.latency evt.latency.human evt.latency.ns evt.latency.s evt.plugininfo
evt.pluginname evt.rawtime evt.rawtime.ns evt.rawtime.s evt.reltime evt.reltime.ns
evt.reltime.s evt.source evt.time.iso8601 evt.time.s evt.wait_latency evt.abspath
evt.abspath.dst evt.abspath.src evt.is_async evt.asynctype evt.around evt.arg evt.rawarg
proc.aexe proc.aexepath proc.cmdlenargs proc.cmdnargs proc.cwd proc.duration proc.env
proc.exe_ino proc.exe_ino.ctime proc.exe_ino.ctime_duration_pidns_start
proc.exe_ino.ctime_duration_proc_start proc.exe_ino.mtime proc.exeline proc.fdopencount
proc.fdlimit proc.fdusage proc.is_container_healthcheck proc.is_container_liveness_probe
proc.is_container_readiness_probe proc.is_exe_from_memfd proc.is_exe_upper_layer
proc.is_exe_writable proc.is_exe_lower_layer proc.is_sid_leader proc.is_vpgid_leader
proc.loginshellid proc.nchilds proc.nthreads proc.pcmdline proc.pexe proc.pid.ts proc.pvpid
proc.ppid.duration proc.ppid.ts proc.sid proc.sid.exe proc.sid.exepath proc.sname
proc.stdin.name proc.stdin.type proc.stdout.name proc.stdout.type proc.stderr.name
proc.stderr.type proc.tty proc.vmrss proc.vmsize proc.vmswap proc.vpgid proc.vpgid.exe
proc.vpgid.exepath proc.vpgid.name proc.vpid proc.pidns_init_start_ts proc.is_pidns_init
proc.cpuload
thread.cap_effective thread.cap_inheritable thread.cap_permitted thread.cgroup
thread.cgroups thread.exectime thread.ismain thread.nametid thread.pfmajor thread.pfminor
thread.totexectime thread.vmrss thread.vmsize thread.vtid
user.homedir user.loginname user.loginuid user.shell group.name
fd.cip.name fd.containerdirectory fd.containername fd.cproto fd.dev fd.dev.major
fd.dev.minor fd.directory fd.filename fd.ino fd.is_server fd.lip.name fd.lproto
fd.nameraw fd.rip.name fd.rproto fd.sip.name fd.sproto fd.types fd.uid fd.containerid
fdlist.cips fdlist.cports fdlist.names fdlist.sips fdlist.sports
fs.path.name fs.path.nameraw fs.path.source fs.path.sourceraw fs.path.target
fs.path.targetraw
container.cni.json container.duration container.full_id container.healthcheck
container.host_pid container.host_network container.host_ipc container.image.digest
container.image.id container.image.tag container.ip container.label container.labels
container.liveness_probe container.mount container.mount.dest container.mount.mode
container.mount.propagation container.mount.rdwr container.mount.source container.mount.type
container.mounts container.privileged container.readiness_probe container.start_ts
container.type
k8s.ns.id k8s.ns.label k8s.ns.labels k8s.pod.cni.json k8s.pod.full_sandbox_id
k8s.pod.ip k8s.pod.sandbox_id k8s.rc.name k8s.rs.name k8s.svc.name k8s.deployment.name
k8s.pod.id
syscall.type span.id
""".split())

_ARG_PREFIXES = ("evt.arg.", "evt.rawarg.", "evt.arg[", "evt.rawarg[")
#: Field classes of Falco's other event sources (plugins, k8s audit): never supported.
_OTHER_SOURCE_PREFIXES = ("ka.", "jevt.", "aws.", "gcp.", "okta.", "github.", "k8saudit.",
                          "json.", "mesos.", "marathon.", "ct.", "k8smeta.", "cloudtrail.")


def is_falco_only(name: str) -> bool:
    """Whether ``name`` is a real Falco field that netvigil does not provide."""
    return (name in FALCO_ONLY_FIELDS or name.startswith(_ARG_PREFIXES)
            or name.startswith(_OTHER_SOURCE_PREFIXES))

#: Falco (libsinsp) event names netvigil does not emit: valid in conditions, never seen.
FALCO_ONLY_EVENT_TYPES: frozenset[str] = frozenset("""
open openat openat2 creat close read write readv writev pread pwrite preadv pwritev
recvfrom recvmsg recvmmsg sendmmsg socketpair shutdown getsockopt setsockopt getsockname
getpeername poll ppoll select epoll_wait epoll_create epoll_create1 epoll_ctl
clone3 fork vfork exit exit_group kill tkill tgkill signalfd signalfd4 pipe pipe2 eventfd
eventfd2 inotify_init inotify_init1 fcntl ioctl mmap mmap2 munmap mprotect brk madvise
mkdir mkdirat rmdir unlink unlinkat rename renameat renameat2 link linkat symlink symlinkat
chmod fchmod fchmodat chown fchown fchownat lchown chdir fchdir chroot truncate ftruncate
stat lstat fstat newfstatat access faccessat faccessat2 getdents getdents64 umask
mount umount umount2 pivot_root setns unshare ptrace prctl capset setuid setgid setresuid
setresgid setreuid setregid setfsuid setfsgid setsid setpgid getuid geteuid getgid getegid
getresuid getresgid bpf init_module finit_module delete_module userfaultfd memfd_create
seccomp process_vm_readv process_vm_writev io_uring_setup io_uring_enter io_uring_register
mlock mlock2 munlock mlockall munlockall nanosleep futex splice tee copy_file_range
sendfile quotactl sethostname setdomainname setrlimit prlimit getrlimit timerfd_create
flock dup_1 openat_2 open_by_handle_at mknod mknodat utimes utimensat futimesat
container k8s notification infra procinfo switch pluginevent asyncevent
""".split())
