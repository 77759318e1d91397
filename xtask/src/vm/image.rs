//! The uncompressed vmlinux inside a bzImage: qemu boots it through its PVH
//! entry 3-4 s faster under TCG than it decompresses the bzImage itself.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::util::{describe, find_program};

/// Compression formats Debian kernels use, by magic.
const FORMATS: &[(&[u8], &str, &[&str])] = &[
    (
        &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
        "xz",
        &["-dc", "--single-stream"],
    ),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", &["-dcq"]),
];

/// Writes the ELF vmlinux of `vmlinuz` to `out`.
pub fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    let image = fs::read(vmlinuz).with_context(|| format!("cannot read {}", vmlinuz.display()))?;
    let mut candidates: Vec<(usize, &str, &[&str])> = FORMATS
        .iter()
        .flat_map(|&(magic, program, args)| {
            find_all(&image, magic).map(move |offset| (offset, program, args))
        })
        .collect();
    candidates.sort_by_key(|c| c.0);
    for (offset, program, args) in candidates {
        let Some(path) = find_program(program) else {
            continue;
        };
        let Ok(elf) = decompress(Command::new(path).args(args), &image[offset..]) else {
            continue;
        };
        if elf_complete(&elf) {
            let partial = out.with_extension("partial");
            fs::write(&partial, &elf)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            fs::rename(&partial, out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            return Ok(());
        }
    }
    bail!("no xz/zstd-compressed ELF found in {}", vmlinuz.display())
}

fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// Runs a decompressor on `input`; keeps its output even when it complains
/// about the bytes after the stream (the rest of the bzImage).
fn decompress(cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin for `{}`", describe(cmd)))?;
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The decompressor may stop reading at the end of its stream.
        let _ = stdin.write_all(&data);
    });
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{}` failed", describe(cmd)))?;
    let _ = writer.join();
    Ok(out.stdout)
}

/// True when `data` is an ELF64 file whose program segments all lie inside it.
pub fn elf_complete(data: &[u8]) -> bool {
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    if phnum == 0 {
        return false;
    }
    (0..usize::from(phnum)).all(|i| {
        let base = phoff as usize + i * usize::from(phentsize);
        match (u64_at(base + 8), u64_at(base + 32)) {
            (Some(offset), Some(filesz)) => offset.saturating_add(filesz) <= data.len() as u64,
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(segment_end: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        data[..4].copy_from_slice(b"\x7fELF");
        data[4] = 2;
        data[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        data[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        data[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        data[64 + 8..64 + 16].copy_from_slice(&120u64.to_le_bytes());
        data[64 + 32..64 + 40].copy_from_slice(&(segment_end - 120).to_le_bytes());
        data
    }

    #[test]
    fn a_truncated_elf_is_refused() {
        assert!(elf_complete(&elf(200, 200)));
        assert!(!elf_complete(&elf(201, 200)));
        assert!(!elf_complete(
            b"MZ not an elf at all, but long enough to be read as one...."
        ));
    }

    #[test]
    fn magics_are_found_at_every_offset() {
        let hay = [0, 0x28, 0xb5, 0x2f, 0xfd, 1, 0x28, 0xb5, 0x2f, 0xfd];
        assert_eq!(find_all(&hay, FORMATS[1].0).collect::<Vec<_>>(), [1, 6]);
    }
}
