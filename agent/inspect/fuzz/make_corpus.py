#!/usr/bin/env python3
"""Writes the seed corpus of the goscope-inspect fuzz targets (corpus/<target>/seed-*).

Real Go binaries are ~2 MB, too big to check in, so the seeds are small ELF files rebuilt from the
parts of a real binary that goscope-inspect reads:

* `.go.buildinfo`, `.note.go.buildid` and `.go.module` (moduledata, for Go 1.26+ text start),
  copied as they are;
* a `.gopclntab` cut down to a dozen functions (the probed runtime functions, the functions
  following them, main.main): names, `_func` records, pc-file/pc-line tables and file tables,
  re-laid-out but in the real format, mapped at the original address;
* the inline trees of those functions (PCDATA_InlTreeIndex / FUNCDATA_InlTree), packed at
  `moduledata.gofunc`, so that `symbolize_frames` expands inlined calls as on the real binary;
* the machine code of those functions, each as its own small executable section at its real address
  (the rest of `.text` is a NOBITS section so that addresses stay executable);
* `runtime.waitReasonStrings` and the strings it points to;
* optionally a `.symtab` for those symbols, synthetic DWARF for the runtime structs (plain,
  SHF_COMPRESSED zlib or `.zdebug_`), or no section headers at all (PT_LOAD/PT_NOTE only).

Plus narrower seeds: the raw buildinfo blob, the cut-down pclntab, and DWARF-only ELF files (the
synthetic DWARF, and a truncated prefix of the real DWARF).

The binaries are built (with -trimpath, so the output is reproducible) from a tiny Go program with
the installed `go` (also as PIE) and, when it can be fetched, `GOTOOLCHAIN=go1.19.13` (the oldest
supported version; older pclntab layout). Run once:

    python3 agent/inspect/fuzz/make_corpus.py

It only adds/overwrites `seed-*` files; the fuzzers' own corpus entries are left alone.
"""

import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
INSPECT = os.path.dirname(HERE)

GO_SRC = """package main

import "fmt"

func main() {
	ch := make(chan int)
	go func() { ch <- 1 }()
	fmt.Println(<-ch)
}
"""

# Functions whose code the analysis reads (probe sites, layout validation, wait reasons).
CODE_FUNCS = [
    "runtime.gopark",
    "runtime.newproc1",
    "runtime.ready",
    "runtime.goexit1",
    "runtime.chansend",
    "runtime.waitReason.String",
    "main.main",
]

SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOTE, SHT_NOBITS = 1, 2, 3, 4, 7, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_COMPRESSED = 1, 2, 4, 0x800
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4


# ---------------------------------------------------------------------------------------------
# Reading the real binary.


class Elf:
    def __init__(self, data):
        self.data = data
        (shoff,) = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        self.sections = []
        for i in range(shnum):
            f = struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
            self.sections.append(
                dict(name_off=f[0], type=f[1], flags=f[2], addr=f[3], offset=f[4], size=f[5],
                     link=f[6], info=f[7], entsize=f[9]))
        strtab = self.sections[shstrndx]
        for s in self.sections:
            start = strtab["offset"] + s["name_off"]
            s["name"] = data[start:data.index(b"\0", start)].decode()
        self.symbols = {}
        symtab = self.section(".symtab")
        if symtab:
            strs = self.sections[symtab["link"]]
            for i in range(symtab["size"] // 24):
                name, info, _, _, value, size = struct.unpack_from(
                    "<IBBHQQ", data, symtab["offset"] + 24 * i)
                start = strs["offset"] + name
                n = data[start:data.index(b"\0", start)].decode(errors="replace")
                self.symbols.setdefault(n, (value, size, info & 0xF))

        # R_X86_64_RELATIVE relocations (PIE): target address -> addend.
        self.relative = {}
        for sec in self.sections:
            if sec["type"] == SHT_RELA:
                raw = self.raw(sec)
                for k in range(0, len(raw) - 23, 24):
                    off, info, addend = struct.unpack_from("<QQq", raw, k)
                    if info & 0xFFFFFFFF == 8:
                        self.relative[off] = addend

    def section(self, name):
        return next((s for s in self.sections if s["name"] == name), None)

    def raw(self, s):
        return self.data[s["offset"]:s["offset"] + s["size"]]

    def contents(self, s):
        """Section bytes, inflated if SHF_COMPRESSED."""
        raw = self.raw(s)
        if s["flags"] & SHF_COMPRESSED:
            return zlib.decompress(raw[24:])
        return raw

    def read(self, addr, n):
        for s in self.sections:
            if s["type"] != SHT_NOBITS and s["addr"] and s["addr"] <= addr < s["addr"] + s["size"]:
                off = s["offset"] + addr - s["addr"]
                return self.data[off:off + n]
        raise KeyError(hex(addr))


def uvarint(b, pos):
    x = shift = 0
    while True:
        c = b[pos]
        pos += 1
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x, pos
        shift += 7


def pcvalue_extent(b, start):
    """(end offset, values) of the pc-value table at b[start:] (Go's encoding, see pclntab.rs)."""
    pos, val, first, values = start, -1, True, []
    while True:
        uv, pos = uvarint(b, pos)
        if uv == 0 and not first:
            return pos, values
        val += -(uv & 1) ^ (uv >> 1)
        values.append(val)
        _, pos = uvarint(b, pos)
        first = False


class Pcln:
    def __init__(self, data):
        self.d = data
        self.magic, = struct.unpack_from("<I", data, 0)
        self.min_lc = data[6]
        f = struct.unpack_from("<8Q", data, 8)
        (self.nfunc, self.nfiles, self.text_start, self.funcname, self.cu, self.filetab,
         self.pctab, self.pcln) = f
        # _func header: 44 bytes from Go 1.20 (startLine), 40 before.
        self.func_size = 44 if self.magic == 0xFFFFFFF1 else 40

    def functab(self, i):
        return struct.unpack_from("<II", self.d, self.pcln + 8 * i)

    def func(self, i):
        _, funcoff = self.functab(i)
        base = self.pcln + funcoff
        return base, struct.unpack_from("<9I", self.d, base)

    def cstr(self, off):
        return self.d[off:self.d.index(b"\0", off)]

    def name(self, i):
        return self.cstr(self.funcname + self.func(i)[1][1]).decode()

    def index(self):
        """name -> first index (assembly functions appear twice: ABI0 body, ABIInternal wrapper)."""
        out = {}
        for i in range(self.nfunc):
            out.setdefault(self.name(i), i)
        return out


def cut_pclntab(p, wanted, read_gofunc=None):
    """A valid pclntab holding only the functions in `wanted` and the function after each, and
    the inline trees of those functions (FUNCDATA_InlTree, moved to a compact blob that is to be
    mapped at `moduledata.gofunc`; `read_gofunc(off, n)` reads the original). Returns
    (table, inline tree blob)."""
    names = p.index()
    keep = set()
    for w in wanted:
        i = names[w]
        keep.update([i, i + 1] if i + 1 < p.nfunc else [i])
    keep = sorted(keep)
    funcnames, cutab, filetab, pctab = bytearray(), [], bytearray(), bytearray(b"\0")
    tree = bytearray()
    # inlinedCall: Go 1.20+ {funcID u8, _ [3]u8, nameOff, parentPc, startLine i32} = 16 bytes;
    # 1.18/1.19 {parent i16, funcID u8, _ u8, file, line, func_ (nameOff), parentPc i32} = 20.
    rec_size, name_field = (16, 4) if p.magic == 0xFFFFFFF1 else (20, 12)
    files = {}

    def file_off(real_off):
        if real_off == 0xFFFFFFFF:
            return real_off
        s = p.cstr(p.filetab + real_off)
        if s not in files:
            files[s] = len(filetab)
            filetab.extend(s + b"\0")
        return files[s]

    def copy_table(off):
        if off == 0:
            return 0, []
        start = p.pctab + off
        end, values = pcvalue_extent(p.d, start)
        new = len(pctab)
        pctab.extend(p.d[start:end])
        return new, values

    recs = []
    for i in keep:
        entryoff, _ = p.functab(i)
        base, f = p.func(i)
        hdr = bytearray(p.d[base:base + p.func_size])
        name_off = len(funcnames)
        funcnames.extend(p.name(i).encode() + b"\0")
        pcfile, fvals = copy_table(f[5])
        pcln, _ = copy_table(f[6])
        cu_off = len(cutab)
        nfiles = max([v for v in fvals if v >= 0], default=0) + 1
        for k in range(nfiles):
            real, = struct.unpack_from("<I", p.d, p.cu + 4 * (f[8] + k))
            cutab.append(file_off(real))
        # Only PCDATA_InlTreeIndex (2) and FUNCDATA_InlTree (3) are kept.
        npcdata, nfuncdata = f[7], hdr[-1]
        at = base + p.func_size
        pcdata = struct.unpack_from(f"<{npcdata}I", p.d, at)
        funcdata = struct.unpack_from(f"<{nfuncdata}I", p.d, at + 4 * npcdata)
        new_pcdata, new_funcdata = [], []
        if read_gofunc and npcdata > 2 and nfuncdata > 3 and funcdata[3] != 0xFFFFFFFF:
            inl_table, vals = copy_table(pcdata[2])
            count = max(vals, default=-1) + 1
            if count > 0:
                raw = bytearray(read_gofunc(funcdata[3], count * rec_size))
                for k in range(count):
                    o = k * rec_size + name_field
                    real, = struct.unpack_from("<i", raw, o)
                    struct.pack_into("<i", raw, o, len(funcnames))
                    funcnames.extend(p.cstr(p.funcname + real) + b"\0")
                new_pcdata = [0, 0, inl_table]
                new_funcdata = [0xFFFFFFFF] * 3 + [len(tree)]
                tree.extend(raw)
        # entryOff, nameOff, args, deferreturn, pcsp=0, pcfile, pcln, npcdata, cuOffset; then
        # nfuncdata (last byte of the header), pcdata and funcdata offsets.
        struct.pack_into("<IiIIIIIII", hdr, 0, f[0], name_off, f[2], f[3], 0, pcfile, pcln,
                         len(new_pcdata), cu_off)
        hdr[-1] = len(new_funcdata)
        recs.append((entryoff, bytes(hdr) + struct.pack(f"<{len(new_pcdata)}I", *new_pcdata)
                     + struct.pack(f"<{len(new_funcdata)}I", *new_funcdata)))
    last = keep[-1]
    end_entry, _ = p.functab(last + 1)

    out = bytearray(72)
    def align(n=8):
        while len(out) % n:
            out.append(0)
    offs = {}
    for key, blob in [("funcname", funcnames), ("cu", b"".join(struct.pack("<I", c) for c in cutab)),
                      ("filetab", filetab), ("pctab", pctab)]:
        align()
        offs[key] = len(out)
        out.extend(blob)
    align()
    offs["pcln"] = len(out)
    n = len(recs)
    func_start = 8 * (n + 1)
    functab, funcs = bytearray(), bytearray()
    for entryoff, hdr in recs:
        functab.extend(struct.pack("<II", entryoff, func_start + len(funcs)))
        funcs.extend(hdr)
        while len(funcs) % 4:
            funcs.append(0)
    functab.extend(struct.pack("<II", end_entry, 0))
    out.extend(functab + funcs)
    struct.pack_into("<IHBB8Q", out, 0, p.magic, 0, p.min_lc, 8, n, len(cutab), p.text_start,
                     offs["funcname"], offs["cu"], offs["filetab"], offs["pctab"], offs["pcln"])
    return bytes(out), bytes(tree)


# ---------------------------------------------------------------------------------------------
# Synthetic DWARF for the runtime structs, from a checked-in offsets table.


def uleb(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_table(minor):
    entries = {}
    with open(os.path.join(INSPECT, "offsets", f"go1.{minor}.txt")) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[0].startswith("runtime.") and parts[1].isdigit():
                entries[parts[0]] = int(parts[1])
    return entries


def synthetic_dwarf(entries, version):
    """(.debug_info, .debug_abbrev, .debug_str): two units. Unit 1 holds a base type and a
    Go 1.26-style {vp, vu} pair struct (through a typedef); unit 2 the runtime structs, whose
    members refer to unit 1 with DW_FORM_ref_addr (as Go's types do) — `sudog.c`/`sudog.elem`
    through the pair, so the `vu` search is exercised."""
    # abbrev code: (tag, children, [(attr, form)])
    abbrevs = {
        1: (0x11, 1, [(0x03, 0x08), (0x13, 0x0B)]),            # compile_unit: name string, language data1
        2: (0x13, 1, [(0x03, 0x0E), (0x0B, 0x0F)]),            # structure_type: name strp, byte_size udata
        3: (0x0D, 0, [(0x03, 0x08), (0x38, 0x0F), (0x49, 0x10)]),  # member: name, location, type ref_addr
        4: (0x16, 0, [(0x03, 0x08), (0x49, 0x13)]),            # typedef: name, type ref4
        5: (0x24, 0, [(0x03, 0x08), (0x0B, 0x0F), (0x3E, 0x0B)]),  # base_type
        6: (0x0D, 0, [(0x03, 0x08), (0x38, 0x0F), (0x49, 0x13)]),  # member with ref4 type
        7: (0x13, 1, [(0x03, 0x08), (0x0B, 0x0F)]),            # structure_type: name string
    }
    abbrev = bytearray()
    for code, (tag, children, attrs) in abbrevs.items():
        abbrev += uleb(code) + uleb(tag) + bytes([children])
        for a, f in attrs:
            abbrev += uleb(a) + uleb(f)
        abbrev += b"\0\0"
    abbrev += b"\0"
    strs = bytearray(b"\0")

    def strp(s):
        off = len(strs)
        strs.extend(s.encode() + b"\0")
        return struct.pack("<I", off)

    def cstr(s):
        return s.encode() + b"\0"

    def unit(body):
        # DWARF 4: version, abbrev offset, address size; DWARF 5: version, unit type, address
        # size, abbrev offset.
        if version == 4:
            hdr = struct.pack("<HIB", 4, 0, 8)
        else:
            hdr = struct.pack("<HBBI", 5, 1, 8, 0)
        return struct.pack("<I", len(hdr) + len(body)) + hdr + body

    hdr_len = 11 if version == 4 else 12
    # Unit 1 at .debug_info offset 0.
    u1 = bytearray()
    u1 += uleb(1) + cstr("go:types") + bytes([0x16])
    base_off = hdr_len + len(u1)
    u1 += uleb(5) + cstr("uintptr") + uleb(8) + bytes([7])
    pair_off = hdr_len + len(u1)
    u1 += uleb(7) + cstr("runtime.maybeTraceablePtr") + uleb(16)
    u1 += uleb(3) + cstr("vp") + uleb(0) + struct.pack("<I", base_off)
    u1 += uleb(3) + cstr("vu") + uleb(8) + struct.pack("<I", base_off)
    u1 += b"\0"
    typedef_off = hdr_len + len(u1)
    u1 += uleb(4) + cstr("runtime.maybeTraceableChan") + struct.pack("<I", pair_off)
    u1 += b"\0"
    u1 = unit(bytes(u1))

    structs = {}
    for key, off in entries.items():
        _, ty, field, *sub = key.split(".")
        if field == "sizeof":
            continue
        if ty == "g" and field == "sched" and sub:
            structs.setdefault("gobuf", {})[sub[0]] = off - entries["runtime.g.sched"]
            continue
        structs.setdefault(ty, {})[field] = off
    u2 = bytearray()
    u2 += uleb(1) + cstr("runtime") + bytes([0x16])
    for ty, members in structs.items():
        size = entries.get("runtime.g.sizeof", 0) if ty == "g" else max(members.values()) + 8
        u2 += uleb(2) + strp(f"runtime.{ty}") + uleb(size)
        for field, off in sorted(members.items(), key=lambda kv: kv[1]):
            if ty == "sudog" and field in ("c", "elem"):
                u2 += uleb(3) + cstr(field) + uleb(off - 8) + struct.pack("<I", typedef_off)
            else:
                u2 += uleb(3) + cstr(field) + uleb(off) + struct.pack("<I", base_off)
        u2 += b"\0"
    u2 += b"\0"
    return u1 + unit(bytes(u2)), bytes(abbrev), bytes(strs)


# ---------------------------------------------------------------------------------------------
# Writing small ELF files.


def write_elf(sections, headless=False, machine=62, e_type=2):
    """sections: dicts with name, type, flags, addr, data [, link, entsize, size].
    With headless, no section headers: each allocated section becomes a PT_LOAD (NOTE -> PT_NOTE)."""
    # Layout: ELF header, program headers (headless) or none, section data, shstrtab, shdrs.
    phdrs = []
    if headless:
        off = 0x40 + 56 * len(sections)
        out = bytearray()
        for s in sections:
            data = s.get("data", b"")
            while (off + len(out)) % 16:
                out.append(0)
            file_off = off + len(out)
            out.extend(data)
            if s["type"] == SHT_NOTE:
                phdrs.append((PT_NOTE, PF_R, file_off, s["addr"], len(data), len(data)))
            elif s["flags"] & SHF_ALLOC:
                flags = PF_R | (PF_W if s["flags"] & SHF_WRITE else 0) | (
                    PF_X if s["flags"] & SHF_EXECINSTR else 0)
                filesz = 0 if s["type"] == SHT_NOBITS else len(data)
                phdrs.append((PT_LOAD, flags, file_off, s["addr"], filesz, s.get("size", len(data))))
        ph = b"".join(struct.pack("<IIQQQQQQ", t, f, o, a, a, fs, ms, 0x1000) for t, f, o, a, fs, ms in phdrs)
        hdr = elf_header(e_type, machine, phoff=0x40 if ph else 0, phnum=len(phdrs), shoff=0,
                         shnum=0, shstrndx=0)
        img = bytearray(hdr + ph)
        img.extend(b"\0" * (off - len(img)))
        return bytes(img + out)
    out = bytearray(0x40)
    shstr = bytearray(b"\0")
    shdrs = [struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    for s in sections:
        while len(out) % 16:
            out.append(0)
        data = s.get("data", b"")
        file_off = len(out)
        out.extend(data if s["type"] != SHT_NOBITS else b"")
        name_off = len(shstr)
        shstr.extend(s["name"].encode() + b"\0")
        size = s.get("size", len(data))
        shdrs.append(struct.pack("<IIQQQQIIQQ", name_off, s["type"], s["flags"], s["addr"],
                                 file_off, size, s.get("link", 0), s.get("info", 0), 1,
                                 s.get("entsize", 0)))
    name_off = len(shstr)
    shstr.extend(b".shstrtab\0")
    shstr_off = len(out)
    out.extend(shstr)
    shdrs.append(struct.pack("<IIQQQQIIQQ", name_off, SHT_STRTAB, 0, 0, shstr_off, len(shstr), 0,
                             0, 1, 0))
    while len(out) % 8:
        out.append(0)
    shoff = len(out)
    out.extend(b"".join(shdrs))
    out[:0x40] = elf_header(e_type, machine, phoff=0, phnum=0, shoff=shoff, shnum=len(shdrs),
                            shstrndx=len(shdrs) - 1)
    return bytes(out)


def elf_header(e_type, machine, phoff, phnum, shoff, shnum, shstrndx):
    ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    return ident + struct.pack("<HHIQQQIHHHHHH", e_type, machine, 1, 0x401000, phoff, shoff, 0,
                               0x40, 56, phnum, 64, shnum, shstrndx)


def compress_chdr(data):
    return struct.pack("<IIQQ", 1, 0, len(data), 1) + zlib.compress(data)


# ---------------------------------------------------------------------------------------------


def build(go_version, workdir, *flags):
    src = os.path.join(workdir, "src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "main.go"), "w") as f:
        f.write(GO_SRC)
    with open(os.path.join(src, "go.mod"), "w") as f:
        f.write("module example.com/tiny\n\ngo 1.19\n")
    out = os.path.join(workdir, f"tiny-{go_version}{''.join(flags)}")
    env = dict(os.environ, GOTOOLCHAIN=go_version, CGO_ENABLED="0", GOARCH="amd64", GOOS="linux")
    r = subprocess.run(["go", "build", "-trimpath", *flags, "-o", out, "."], cwd=src, env=env, capture_output=True)
    if r.returncode != 0:
        print(f"skipping {go_version}: {r.stderr.decode().strip()}", file=sys.stderr)
        return None
    with open(out, "rb") as f:
        return f.read()


def go_minor(elf):
    bi = elf.raw(elf.section(".go.buildinfo"))
    n, pos = uvarint(bi, 32)
    v = bi[pos:pos + n].decode()
    return v, int(re.match(r"go1\.(\d+)", v).group(1))


def carve(data, out, variant=""):
    e = Elf(data)
    version, minor = go_minor(e)
    tag = f"go1.{minor}{variant}"
    e_type, = struct.unpack_from("<H", data, 0x10)
    print(f"{tag}: {version}", file=sys.stderr)
    pcsec = e.section(".gopclntab")
    p = Pcln(e.raw(pcsec))
    gofunc_sym = next(n for n in ("go:func.*", "go.func.*") if n in e.symbols)
    # The base of FUNCDATA offsets is moduledata.gofunc (in 1.26 8 bytes past go:func.*).
    md = e.symbols["runtime.firstmoduledata"][0]
    field = md + (304 if minor <= 19 else 320 if minor <= 26 else 344)
    gofunc = struct.unpack("<Q", e.read(field, 8))[0] or e.relative[field]
    pcln, tree = cut_pclntab(p, CODE_FUNCS, lambda off, n: e.read(gofunc + off, n))
    text = e.section(".text")

    secs = []
    for name in (".note.go.buildid",):
        s = e.section(name)
        secs.append(dict(name=name, type=SHT_NOTE, flags=SHF_ALLOC, addr=s["addr"], data=e.raw(s)))
    secs.append(dict(name=".text", type=SHT_NOBITS, flags=SHF_ALLOC | SHF_EXECINSTR,
                     addr=text["addr"], size=text["size"]))
    index = p.index()
    for fn in CODE_FUNCS:
        value, _, _ = e.symbols[fn]
        # Up to the next function's entry (alignment padding included), as pclntab says.
        i = index[fn]
        size = p.functab(i + 1)[0] - p.functab(i)[0]
        secs.append(dict(name=".text", type=SHT_PROGBITS, flags=SHF_ALLOC | SHF_EXECINSTR,
                         addr=value, data=e.read(value, size)))
    secs.append(dict(name=".gopclntab", type=SHT_PROGBITS, flags=SHF_ALLOC, addr=pcsec["addr"],
                     data=pcln))
    bi = e.section(".go.buildinfo")
    secs.append(dict(name=".go.buildinfo", type=SHT_PROGBITS, flags=SHF_ALLOC | SHF_WRITE,
                     addr=bi["addr"], data=e.raw(bi)))
    gm = e.section(".go.module")
    if gm:
        secs.append(dict(name=".go.module", type=SHT_PROGBITS, flags=SHF_ALLOC | SHF_WRITE,
                         addr=gm["addr"], data=e.raw(gm)))
    else:
        # Go < 1.26: runtime.firstmoduledata lives in .noptrdata (found by its pclntab pointer).
        md, size, _ = e.symbols["runtime.firstmoduledata"]
        secs.append(dict(name=".noptrdata", type=SHT_PROGBITS, flags=SHF_ALLOC | SHF_WRITE,
                         addr=md, data=e.read(md, size)))
    # The inline trees, where moduledata.gofunc (kept in the .go.module copy) points.
    secs.append(dict(name=".rodata", type=SHT_PROGBITS, flags=SHF_ALLOC, addr=gofunc, data=tree))
    # runtime.waitReasonStrings and its strings.
    wr_addr, wr_size, _ = e.symbols["runtime.waitReasonStrings"]
    arr = e.read(wr_addr, wr_size)
    secs.append(dict(name=".data", type=SHT_PROGBITS, flags=SHF_ALLOC | SHF_WRITE, addr=wr_addr,
                     data=arr))
    ranges = []
    for i in range(wr_size // 16):
        ptr, ln = struct.unpack_from("<QQ", arr, 16 * i)
        ptr = ptr or e.relative.get(wr_addr + 16 * i, 0)
        if ln:
            ranges.append([ptr, ptr + ln])
    ranges.sort()
    merged = []
    for a, b in ranges:
        if merged and a <= merged[-1][1] + 64:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    for a, b in merged:
        secs.append(dict(name=".rodata", type=SHT_PROGBITS, flags=SHF_ALLOC, addr=a,
                         data=e.read(a, b - a)))

    # PIE: the RELATIVE relocations of the copied writable data (pointers the file leaves 0).
    relocs = b"".join(
        struct.pack("<QQq", off, 8, addend) for off, addend in sorted(e.relative.items())
        if any(s["flags"] & SHF_WRITE and s["addr"] <= off < s["addr"] + len(s["data"])
               for s in secs if "data" in s))
    if relocs:
        secs.append(dict(name=".rela", type=SHT_RELA, flags=SHF_ALLOC, addr=0, data=relocs,
                         entsize=24))

    # .symtab for the carved functions and the wait reason array.
    strtab, syms = bytearray(b"\0"), [struct.pack("<IBBHQQ", 0, 0, 0, 0, 0, 0)]
    for name in CODE_FUNCS + ["runtime.waitReasonStrings", gofunc_sym]:
        value, size, kind = e.symbols[name]
        syms.append(struct.pack("<IBBHQQ", len(strtab), 0x10 | kind, 0, 1, value, size))
        strtab.extend(name.encode() + b"\0")

    def symtab_secs(base_index):
        return [dict(name=".symtab", type=SHT_SYMTAB, flags=0, addr=0, data=b"".join(syms),
                     link=base_index + 1, info=1, entsize=24),
                dict(name=".strtab", type=SHT_STRTAB, flags=0, addr=0, data=bytes(strtab))]

    info, abbrev, strs = synthetic_dwarf(read_table(min(minor, 27)), 4 if minor < 25 else 5)

    def dwarf_secs(mode):
        parts = [(".debug_info", info), (".debug_abbrev", abbrev), (".debug_str", strs)]
        if mode == "plain":
            return [dict(name=n, type=SHT_PROGBITS, flags=0, addr=0, data=d) for n, d in parts]
        if mode == "chdr":
            return [dict(name=n, type=SHT_PROGBITS, flags=SHF_COMPRESSED, addr=0,
                         data=compress_chdr(d)) for n, d in parts]
        return [dict(name=n.replace(".debug_", ".zdebug_"), type=SHT_PROGBITS, flags=0, addr=0,
                     data=b"ZLIB" + struct.pack(">Q", len(d)) + zlib.compress(d)) for n, d in parts]

    def put(target, name, blob):
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"seed-{tag}-{name}"), "wb") as f:
            f.write(blob)

    # go_binary: stripped, with symtab, with DWARF (plain / compressed / zdebug), headless.
    spans = sorted((s["addr"], s["addr"] + len(s["data"])) for s in secs if s.get("addr") and s.get("data"))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "carved sections overlap"

    def elf(extra=(), headless=False):
        return write_elf(secs + list(extra), headless=headless, e_type=e_type)

    put("go_binary", "stripped", elf())
    put("go_binary", "symtab", elf(symtab_secs(len(secs) + 1)))
    put("go_binary", "dwarf", elf(dwarf_secs("plain")))
    put("go_binary", "dwarf-chdr", elf(dwarf_secs("chdr") + symtab_secs(len(secs) + 4)))
    put("go_binary", "dwarf-zdebug", elf(dwarf_secs("zdebug")))
    put("go_binary", "headless", elf(headless=True))
    if variant:
        return
    # Narrow targets.
    put("pclntab", "cut", pcln)
    put("buildinfo", "blob", e.raw(bi))
    put("dwarf", "synthetic", write_elf(dwarf_secs("plain")))
    put("dwarf", "synthetic-chdr", write_elf(dwarf_secs("chdr")))
    put("dwarf", "synthetic-zdebug", write_elf(dwarf_secs("zdebug")))
    # A prefix of the real DWARF: unit and line-program lengths patched to the cut so that the
    # first unit parses until its data runs out.
    real = {}
    for name, keep in [(".debug_info", 8192), (".debug_abbrev", None), (".debug_line", 4096)]:
        s = e.section(name)
        if s is None:
            continue
        d = bytearray(e.contents(s)[:keep] if keep else e.contents(s))
        if keep and len(d) >= 4:
            struct.pack_into("<I", d, 0, len(d) - 4)
        real[name] = bytes(d)
    put("dwarf", "real-prefix", write_elf(
        [dict(name=n, type=SHT_PROGBITS, flags=SHF_COMPRESSED, addr=0, data=compress_chdr(d))
         for n, d in real.items()]))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for go_version in ["local", "go1.19.13"]:
            data = build(go_version, tmp)
            if data is not None:
                carve(data, CORPUS)
        data = build("local", tmp, "-buildmode=pie")
        if data is not None:
            carve(data, CORPUS, "-pie")
    total = 0
    for root, _, files in os.walk(CORPUS):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"corpus: {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
