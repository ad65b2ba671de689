//! Tiny ELF files for tests: static, static-pie and dynamic, x86_64 and aarch64.
//!
//! They are not runnable programs, only headers that every ELF reader (and the
//! kernel's loader checks on machine and interpreter) sees as the real thing.
//! Built from code so no cross toolchain is needed to test for other machines.

use crate::Arch;

/// What kind of ELF to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfSpec {
    /// Target machine.
    pub arch: Arch,
    /// `ET_DYN` (position-independent) instead of `ET_EXEC`.
    pub pie: bool,
    /// `PT_INTERP`, as a dynamically linked glibc program has.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries.
    pub needed: Vec<String>,
    /// Bytes appended after the headers, to make two binaries differ (a version, say).
    pub payload: Vec<u8>,
}

impl ElfSpec {
    /// A fixed-address static executable, like a musl `+crt-static` build.
    pub fn static_exe(arch: Arch) -> Self {
        ElfSpec {
            arch,
            pie: false,
            interpreter: None,
            needed: vec![],
            payload: vec![],
        }
    }

    /// A static position-independent executable.
    pub fn static_pie(arch: Arch) -> Self {
        ElfSpec {
            pie: true,
            ..Self::static_exe(arch)
        }
    }

    /// A dynamically linked glibc program, like a host `cargo build` makes.
    pub fn dynamic(arch: Arch) -> Self {
        let interpreter = match arch {
            Arch::Amd64 => "/lib64/ld-linux-x86-64.so.2",
            Arch::Arm64 => "/lib/ld-linux-aarch64.so.1",
        };
        ElfSpec {
            arch,
            pie: true,
            interpreter: Some(interpreter.to_string()),
            needed: vec!["libc.so.6".to_string()],
            payload: vec![],
        }
    }

    /// The same spec with `payload` appended to the file.
    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }
}

const EHDR: usize = 64;
const PHDR: usize = 56;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_PIE: u64 = 0x0800_0000;

/// The bytes of a little-endian 64-bit ELF file as `spec` describes.
pub fn elf_bytes(spec: ElfSpec) -> Vec<u8> {
    let base: u64 = if spec.pie { 0 } else { 0x40_0000 };
    let has_dynamic = spec.pie || !spec.needed.is_empty();
    let phnum = 1 + usize::from(spec.interpreter.is_some()) + usize::from(has_dynamic);

    // Data after the program headers: interpreter, string table, dynamic array.
    let mut data = Vec::new();
    let data_off = EHDR + phnum * PHDR;
    let interp = spec.interpreter.as_ref().map(|i| {
        let off = data_off + data.len();
        data.extend_from_slice(i.as_bytes());
        data.push(0);
        (off, i.len() + 1)
    });
    let strtab_off = data_off + data.len();
    let mut strtab = vec![0u8];
    let needed_offsets: Vec<u64> = spec
        .needed
        .iter()
        .map(|n| {
            let o = strtab.len() as u64;
            strtab.extend_from_slice(n.as_bytes());
            strtab.push(0);
            o
        })
        .collect();
    data.extend_from_slice(&strtab);
    while !(data_off + data.len()).is_multiple_of(8) {
        data.push(0);
    }
    let dynamic = has_dynamic.then(|| {
        let off = data_off + data.len();
        let mut entries: Vec<(u64, u64)> = needed_offsets.iter().map(|o| (DT_NEEDED, *o)).collect();
        entries.push((DT_STRTAB, base + strtab_off as u64));
        entries.push((DT_STRSZ, strtab.len() as u64));
        if spec.pie {
            entries.push((DT_FLAGS_1, DF_1_PIE));
        }
        entries.push((DT_NULL, 0));
        for (tag, val) in &entries {
            data.extend_from_slice(&tag.to_le_bytes());
            data.extend_from_slice(&val.to_le_bytes());
        }
        (off, entries.len() * 16)
    });
    data.extend_from_slice(&spec.payload);
    let total = (data_off + data.len()) as u64;

    let mut out = Vec::with_capacity(total as usize);
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V ABI, padding.
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    out.extend_from_slice(&[0; 8]);
    let e_type: u16 = if spec.pie { 3 } else { 2 };
    out.extend_from_slice(&e_type.to_le_bytes());
    out.extend_from_slice(&spec.arch.elf_machine().to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&(base + data_off as u64).to_le_bytes()); // e_entry
    out.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&(EHDR as u16).to_le_bytes());
    out.extend_from_slice(&(PHDR as u16).to_le_bytes());
    out.extend_from_slice(&(phnum as u16).to_le_bytes());
    out.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx

    let mut phdr = |p_type: u32, flags: u32, off: u64, size: u64, align: u64| {
        out.extend_from_slice(&p_type.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&(base + off).to_le_bytes()); // p_vaddr
        out.extend_from_slice(&(base + off).to_le_bytes()); // p_paddr
        out.extend_from_slice(&size.to_le_bytes()); // p_filesz
        out.extend_from_slice(&size.to_le_bytes()); // p_memsz
        out.extend_from_slice(&align.to_le_bytes());
    };
    if let Some((off, len)) = interp {
        phdr(PT_INTERP, 4, off as u64, len as u64, 1);
    }
    phdr(PT_LOAD, 5, 0, total, 0x1000);
    if let Some((off, len)) = dynamic {
        phdr(PT_DYNAMIC, 6, off as u64, len as u64, 8);
    }
    out.extend_from_slice(&data);
    out
}
