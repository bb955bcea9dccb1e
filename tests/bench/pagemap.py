# SPDX-License-Identifier: Apache-2.0
"""The memory that only one process maps, counted page by page from the
physical frames (PFNs) that /proc/PID/pagemap shows to root.

Why not USS (Private_Clean + Private_Dirty of smaps): "private" there means
that no other process maps the page *now*. A library page that only krtiotd
maps counts; the same page stops counting the moment a second krtiotd, the
broker or the benchmark's own python maps the same library, and the first
krtiotd looks smaller although it costs a device exactly as much. So USS
goes down as the test setup grows.

What is counted instead: the pages of the measured process, by PFN, that no
process *outside the benchmark's own setup* maps:

  * the measured process's present pages (pagemap bit 63; PFN in bits 0-54,
    which only root sees: a PFN of 0 means we are not allowed to see them),
    each physical page once however many times the process maps it; a
    swapped-out page (bit 62) is its own, as it is nobody else's;
  * the others: every process on the machine except the measured one and
    except the test setup, that is, the processes that would not run on a
    device: the benchmark's own python and all its descendants (brokers,
    nginx, the echo client, mender, the private dbus-daemon, every
    krtiotd), and, wherever they run (another engineer's test on the same
    machine too), every process whose executable (/proc/PID/exe) is
    krtiotd, krtiot-install, krtiot-fetch, krtiotctl, mosquitto,
    mosquitto_sub, nginx, mender, dbus-daemon, busctl or python*. Without
    them, the figure would depend on whether someone else's test happens to
    run a python or an nginx (both map libcrypto) or a krtiotctl, a busctl
    or its own dbus-daemon (which link libsystemd, as krtiotd does) at that
    moment (measured: krtiotd on the bus 2388 KiB while another test ran
    krtiotctl, which mapped 2700 KiB of its pages; 3536 KiB in the next
    run, with krtiotctl left out). A device does run one
    dbus-daemon, its system bus: measure()'s ALSO counts chosen processes of
    the setup (the benchmark's dbus-daemon) as sharers in a second figure
    from the same reading;
  * a page counts when its PFN is mapped by none of those others. Their
    file mappings, shared memory and kernel-provided pages ([vdso]...) are
    read; their private anonymous memory ([heap], [stack], unnamed) is not:
    a page there belongs to that process alone, except the kernel's zero
    page and pages merged by KSM (both told by /proc/kpageflags, and never
    counted as the measured process's), or pages inherited by fork from the
    measured process (krtiotd's only child, krtiot-fetch, execs at once). Skipping
    them keeps the scan cheap and safe from huge sparse mappings (an ASan
    build's shadow is terabytes of address space).

So a library page counts when the measured process is its only user among
the processes a device would also run; the figure does not drop when the
benchmark starts more of its own processes, and does drop when a system
process (here: whatever else runs on the machine, listed in the notes)
shares the page, as systemd and its peers share libc on a device.
"""

import os

PAGE = os.sysconf("SC_PAGE_SIZE")
PRESENT = 1 << 63
SWAPPED = 1 << 62
PFN_MASK = (1 << 55) - 1

# The programs of a test setup, excluded wherever they run (another engineer's test on the same
# machine included), as processes that would not run beside krtiotd on a device (or are krtiotd).
# krtiotctl and busctl, which the D-Bus tests run (`busctl monitor` for a whole test), link libsystemd
# and use sd-bus as krtiotd does: on a device they run for a command, not beside the idle agent.
SETUP_PROGRAMS = frozenset({"krtiotd", "krtiot-install", "krtiot-fetch", "krtiotctl", "mosquitto",
                            "mosquitto_sub", "nginx", "mender", "dbus-daemon", "busctl"})
SETUP_PROGRAM_PREFIXES = ("python",)


def is_setup_program(name):
    return name is not None and (name in SETUP_PROGRAMS or name.startswith(SETUP_PROGRAM_PREFIXES))


class PagemapError(RuntimeError):
    pass


class Mapping:
    __slots__ = ("start", "end", "inode", "path", "name", "private_anon")

    def __init__(self, start, end, inode, path):
        self.start, self.end, self.inode, self.path = start, end, inode, path
        if path.startswith("/"):
            self.name = os.path.basename(path)
        elif path:
            self.name = path
        else:
            self.name = "[anon]"
        # Memory no other process can map (but for the zero page): see the module's docstring.
        self.private_anon = inode == 0 and (path == "" or path in ("[heap]", "[stack]")
                                            or path.startswith("[anon:") or path.startswith("[stack:"))


def mappings(pid):
    """PID's mappings from /proc/PID/maps ([vsyscall] left out: not in pagemap)."""
    out = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.rstrip("\n").split(None, 5)
            if len(parts) < 5:
                continue
            lo, hi = parts[0].split("-")
            path = parts[5] if len(parts) > 5 else ""
            if path == "[vsyscall]":
                continue
            out.append(Mapping(int(lo, 16), int(hi, 16), int(parts[4]), path))
    return out


def _entries(fd, m):
    """The pagemap entries (ints) of mapping M, through the open pagemap FD."""
    n = (m.end - m.start) // PAGE
    data = os.pread(fd, n * 8, (m.start // PAGE) * 8)
    return memoryview(data).cast("Q")


KPF_KSM = 1 << 21
KPF_ZERO_PAGE = 1 << 24


def kernel_shared(pfns):
    """{pfn: "[zero page]" or "[ksm]"} for those of PFNS that the kernel
    shares behind anonymous memory (/proc/kpageflags): the zero page (or
    the huge one) and pages merged by KSM."""
    out = {}
    fd = os.open("/proc/kpageflags", os.O_RDONLY)
    try:
        for pfn in pfns:
            flags = int.from_bytes(os.pread(fd, 8, pfn * 8), "little")
            if flags & KPF_ZERO_PAGE:
                out[pfn] = "[zero page]"
            elif flags & KPF_KSM:
                out[pfn] = "[ksm]"
    finally:
        os.close(fd)
    return out


def own_pages(pid):
    """{key: mapping name} for every resident or swapped page of PID, each
    physical page once (the first mapping that shows it names it). KEY is
    ("pfn", N) or ("swap", entry)."""
    maps = mappings(pid)
    pages = {}
    fd = os.open("/proc/%d/pagemap" % pid, os.O_RDONLY)
    try:
        for m in maps:
            for e in _entries(fd, m):
                if e & PRESENT:
                    pfn = e & PFN_MASK
                    if pfn == 0:
                        raise PagemapError("/proc/%d/pagemap shows no PFNs: must run as root" % pid)
                    pages.setdefault(("pfn", pfn), m.name)
                elif e & SWAPPED:
                    pages.setdefault(("swap", e & PFN_MASK), m.name)
    finally:
        os.close(fd)
    return pages


def _ppids():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        out[int(d)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return out


def _exe_name(pid):
    try:
        exe = os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None
    if exe.endswith(" (deleted)"):
        exe = exe[:-len(" (deleted)")]
    return os.path.basename(exe)


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return "?"


def setup_processes(root=None):
    """The PIDs of the benchmark's own setup: ROOT (default: us) and all its
    descendants, and every process whose executable is one of
    SETUP_PROGRAMS or starts with one of SETUP_PROGRAM_PREFIXES."""
    root = root or os.getpid()
    ppid = _ppids()
    children = {}
    for p, pp in ppid.items():
        children.setdefault(pp, []).append(p)
    setup, todo = set(), [root]
    while todo:
        p = todo.pop()
        if p in setup:
            continue
        setup.add(p)
        todo.extend(children.get(p, ()))
    for p in ppid:
        if is_setup_program(_exe_name(p)):
            setup.add(p)
    return setup, set(ppid)


def shareable_pfns(pid):
    """{pfn} of what PID maps outside its private anonymous memory (what
    another process may map too). Raises OSError (FileNotFoundError,
    ProcessLookupError, PermissionError) when PID cannot be read at all."""
    maps = [m for m in mappings(pid) if not m.private_anon]
    out = set()
    if not maps:
        return out  # a kernel thread, or nothing shareable
    fd = os.open("/proc/%d/pagemap" % pid, os.O_RDONLY)
    try:
        for m in maps:
            try:
                entries = set(_entries(fd, m))
            except OSError:
                continue  # the process is exiting, or a mapping that is not readable
            out.update(e & PFN_MASK for e in entries if e & PRESENT)
    finally:
        os.close(fd)
    return out


def others_pfns(exclude, all_pids):
    """What every process in ALL_PIDS but EXCLUDE maps (private anonymous
    memory left out): ({pfn: set of comms}, processes read, [comms of the
    processes /proc does not let us read])."""
    seen = {}
    read, unreadable = 0, []
    for pid in sorted(all_pids - exclude):
        comm = _comm(pid)
        try:
            pfns = shareable_pfns(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile
        except PermissionError:
            unreadable.append(comm)
            continue
        for pfn in pfns:
            seen.setdefault(pfn, set()).add(comm)
        read += 1
    return seen, read, unreadable


class Unshared:
    """The pages of one process that no other process outside the setup
    maps. .kib: the figure; .by_mapping: [(name, KiB)] largest first;
    .shared_kib, .shared_by_mapping, .shared_by: what the others map too,
    per mapping and per other program (comm). With measure()'s ALSO:
    .also_kib, the figure when those processes count as sharers too,
    .also_by_mapping, [(name, KiB)] of the pages they take off it, and
    .also_mapped_kib, all of the process's pages they map (whether the
    others map them too or not)."""

    def __init__(self, pid, kib, by_mapping, shared_kib, shared_by_mapping, shared_by,
                 also_kib=None, also_by_mapping=(), also_mapped_kib=None):
        self.pid = pid
        self.kib = kib
        self.by_mapping = by_mapping
        self.shared_kib = shared_kib
        self.shared_by_mapping = shared_by_mapping
        self.shared_by = shared_by
        self.also_kib = also_kib
        self.also_by_mapping = also_by_mapping
        self.also_mapped_kib = also_mapped_kib


def _sorted(d):
    return sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))


def measure(pids, also=None):
    """Unshared memory of each of PIDS ({label: pid}), all against the same
    others: every process on the machine but the setup's
    (setup_processes()) and but the measured ones. ALSO ({label: pid}, from
    the setup): processes that a device would run too, counted as sharers in
    a second figure (Unshared.also_kib) from the same reading. Returns
    ({label: Unshared}, {"others_read": N, "unreadable": [comm], "excluded": N})."""
    if os.geteuid() != 0:
        raise PagemapError("needs root to read PFNs from /proc/PID/pagemap")
    setup, everyone = setup_processes()
    exclude = setup | set(pids.values())
    own = {label: own_pages(pid) for label, pid in pids.items()}
    others, read, unreadable = others_pfns(exclude, everyone)
    extra = set()
    for label, pid in (also or {}).items():
        try:
            extra |= shareable_pfns(pid)
        except OSError as e:
            raise PagemapError("cannot read %s (%d): %s" % (label, pid, e))
    kib = PAGE // 1024
    out = {}
    for label, pages in own.items():
        special = kernel_shared([n for kind, n in pages if kind == "pfn"])
        alone, shared, who, taken = {}, {}, {}, {}
        mapped_by_also = 0
        for (kind, n), name in pages.items():
            if kind == "pfn" and n in extra:
                mapped_by_also += kib
            sharers = (others.get(n) or ({special[n]} if n in special else None)) if kind == "pfn" else None
            if sharers:
                shared[name] = shared.get(name, 0) + kib
                for c in sharers:
                    who[c] = who.get(c, 0) + kib
            else:
                alone[name] = alone.get(name, 0) + kib
                if kind == "pfn" and n in extra:
                    taken[name] = taken.get(name, 0) + kib
        total = sum(alone.values())
        out[label] = Unshared(pids[label], total, _sorted(alone), sum(shared.values()),
                              _sorted(shared), _sorted(who),
                              total - sum(taken.values()) if also else None, _sorted(taken),
                              mapped_by_also if also else None)
    return out, {"others_read": read, "unreadable": unreadable, "excluded": len(exclude)}
