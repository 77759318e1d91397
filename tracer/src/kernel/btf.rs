//! Lookups in the running kernel's BTF (`/sys/kernel/btf/vmlinux`): loading
//! it, struct member offsets, enum values and function/tracepoint presence.
//! [`super::offsets`] fills `KernelOffsets` with them.

use btf_rs::{Btf, BtfType, Struct, Type};
use tracer_common::OFFSET_NONE;

use super::KernelError;

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Bounds the walk through typedef/const chains and anonymous members.
const MAX_DEPTH: usize = 32;

/// Environment variable naming a BTF file to use instead of the kernel's
/// own (kernels built without CONFIG_DEBUG_INFO_BTF, with a BTF file from
/// their distribution or BTFHub).
pub const BTF_ENV: &str = "TRACER_BTF";

/// Where the kernel's BTF is read from: `$TRACER_BTF`, else the kernel's.
pub fn vmlinux_path() -> std::path::PathBuf {
    std::env::var_os(BTF_ENV)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| VMLINUX_BTF.into())
}

/// Loads the running kernel's BTF.
pub fn load_vmlinux() -> Result<Btf, KernelError> {
    let path = &vmlinux_path();
    if !path.exists() {
        return Err(KernelError::BtfMissing { path: path.into() });
    }
    // Mapping the file parses only what is looked up (about 3x faster and
    // far smaller here than parsing every type); sysfs BTF can be mapped
    // only on recent kernels, so fall back to reading it.
    Btf::from_file_with_backend(path, btf_rs::Backend::Mmap)
        .or_else(|_| Btf::from_file(path))
        .map_err(|source| KernelError::BtfParse {
            path: path.into(),
            source,
        })
}

pub(super) fn lookup(what: &str) -> impl FnOnce(btf_rs::Error) -> KernelError + '_ {
    move |source| KernelError::BtfLookup {
        what: what.to_string(),
        source,
    }
}

/// Follows typedef, const, volatile, restrict and type tags to the real type.
pub(super) fn peel(btf: &Btf, mut ty: Type) -> Result<Type, btf_rs::Error> {
    for _ in 0..MAX_DEPTH {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t)?,
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                btf.resolve_chained_type(t)?
            }
            Type::TypeTag(t) => btf.resolve_chained_type(t)?,
            _ => return Ok(ty),
        };
    }
    Ok(ty)
}

/// The struct (or typedef of a struct) called `name`.
fn find_struct(btf: &Btf, name: &str) -> Result<Option<Struct>, KernelError> {
    let types = btf.resolve_types_by_name(name).map_err(lookup(name))?;
    // A real struct definition wins over typedefs and forward declarations.
    for ty in &types {
        if let Type::Struct(s) = ty {
            return Ok(Some(s.clone()));
        }
    }
    for ty in types {
        if let Type::Typedef(_) = ty {
            if let Type::Struct(s) = peel(btf, ty).map_err(lookup(name))? {
                return Ok(Some(s));
            }
        }
    }
    Ok(None)
}

/// A member found by [`find_member`]: bit offset from the start of the
/// searched struct, the member's type id, and whether it is a bitfield.
pub(super) struct Found {
    pub(super) bit_offset: u32,
    type_id: u32,
    pub(super) bitfield: bool,
}

/// Looks `name` up among the members of `s`, descending into anonymous
/// struct and union members (whose offsets are added).
pub(super) fn find_member(
    btf: &Btf,
    s: &Struct,
    name: &str,
    depth: usize,
) -> Result<Option<Found>, btf_rs::Error> {
    if depth > MAX_DEPTH {
        return Ok(None);
    }
    for m in &s.members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        let bitfield = m.bitfield_size().is_some_and(|bits| bits != 0) || m.bit_offset() % 8 != 0;
        if mname == name {
            return Ok(Some(Found {
                bit_offset: m.bit_offset(),
                type_id: m.get_type_id().unwrap_or(0),
                bitfield,
            }));
        }
        if mname.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) =
                peel(btf, btf.resolve_chained_type(m)?)?
            {
                if let Some(mut f) = find_member(btf, &inner, name, depth + 1)? {
                    f.bit_offset += m.bit_offset();
                    return Ok(Some(f));
                }
            }
        }
    }
    Ok(None)
}

/// Structs looked up by name once each: every lookup by name scans the
/// kernel's whole type list (about a millisecond on a 6.x vmlinux), and
/// [`kernel_offsets`](super::offsets::kernel_offsets) asks for `sock` alone
/// some twenty times.
#[derive(Default)]
pub(super) struct Structs(std::cell::RefCell<std::collections::HashMap<String, Option<Struct>>>);

impl Structs {
    fn get(&self, btf: &Btf, name: &str) -> Result<Option<Struct>, KernelError> {
        if let Some(s) = self.0.borrow().get(name) {
            return Ok(s.clone());
        }
        let s = find_struct(btf, name)?;
        self.0.borrow_mut().insert(name.to_string(), s.clone());
        Ok(s)
    }
}

/// Byte offset of `root.path[0].path[1]...`, each step looked up in the
/// type of the previous one (anonymous members are transparent; pointers
/// are not followed).
/// `Ok(None)` when the struct or any member is missing.
pub(super) fn offset_of(
    btf: &Btf,
    structs: &Structs,
    root: &str,
    path: &[&str],
) -> Result<Option<(u32, Type)>, KernelError> {
    let Some(mut cur) = structs.get(btf, root)? else {
        return Ok(None);
    };
    let mut bits = 0u32;
    let mut last = Type::Struct(cur.clone());
    for (i, member) in path.iter().enumerate() {
        let Some(f) = find_member(btf, &cur, member, 0).map_err(lookup(root))? else {
            return Ok(None);
        };
        if f.bitfield {
            return Err(KernelError::Bitfield {
                strukt: root.to_string(),
                member: path[..=i].join("."),
            });
        }
        bits += f.bit_offset;
        last = peel(
            btf,
            btf.resolve_type_by_id(f.type_id).map_err(lookup(root))?,
        )
        .map_err(lookup(root))?;
        if i + 1 < path.len() {
            match &last {
                Type::Struct(s) | Type::Union(s) => cur = s.clone(),
                _ => return Ok(None),
            }
        }
    }
    Ok(Some((bits / 8, last)))
}

/// Byte offset of `root.path...` (e.g. `("sock", &["sk_lock", "owned"])`);
/// an error names the struct and member when either is missing, or when the
/// member is a bitfield.
#[cfg(test)]
pub fn required_offset(btf: &Btf, root: &str, path: &[&str]) -> Result<u32, KernelError> {
    required_in(btf, &Structs::default(), root, path)
}

pub(super) fn required_in(
    btf: &Btf,
    structs: &Structs,
    root: &str,
    path: &[&str],
) -> Result<u32, KernelError> {
    match offset_of(btf, structs, root, path)? {
        Some((off, _)) => Ok(off),
        None if structs.get(btf, root)?.is_none() => Err(KernelError::MissingStruct(root.into())),
        None => Err(KernelError::MissingMember {
            strukt: root.to_string(),
            member: path.join("."),
        }),
    }
}

/// Like [`required_in`], but a missing struct or member gives
/// `OFFSET_NONE` (a bitfield is still an error).
pub(super) fn optional_in(
    btf: &Btf,
    structs: &Structs,
    root: &str,
    path: &[&str],
) -> Result<u32, KernelError> {
    Ok(offset_of(btf, structs, root, path)?.map_or(OFFSET_NONE, |(off, _)| off))
}

/// Number of parameters of the BTF tracepoint `tp` (typedef
/// `btf_trace_<tp>`, a pointer to a function prototype), counting the
/// leading `void *` context: `tcp_send_reset` has 4 from 6.10 on (ctx, sk,
/// skb, reason) and 3 before. `None` if the kernel has no such tracepoint.
pub fn tracepoint_arg_count(btf: &Btf, tp: &str) -> Option<usize> {
    let name = format!("btf_trace_{tp}");
    let types = btf.resolve_types_by_name(&name).ok()?;
    types.into_iter().find_map(|ty| {
        let Type::Typedef(td) = ty else { return None };
        let Type::Ptr(ptr) = peel(btf, btf.resolve_chained_type(&td).ok()?).ok()? else {
            return None;
        };
        match peel(btf, btf.resolve_chained_type(&ptr).ok()?).ok()? {
            Type::FuncProto(proto) => Some(proto.parameters.len()),
            _ => None,
        }
    })
}

/// `Some` when BTF has a function `name`, with its parameter count when its
/// prototype resolves (fentry/fexit targets: an fexit program finds the
/// return value right after the parameters). One lookup for both.
pub fn function(btf: &Btf, name: &str) -> Option<Option<usize>> {
    let types = btf.resolve_types_by_name(name).ok()?;
    let mut found = None;
    for ty in types {
        let Type::Func(func) = ty else { continue };
        let params = btf
            .resolve_chained_type(&func)
            .ok()
            .and_then(|t| peel(btf, t).ok())
            .and_then(|t| match t {
                Type::FuncProto(proto) => Some(proto.parameters.len()),
                _ => None,
            });
        if params.is_some() {
            return Some(params);
        }
        found = Some(None);
    }
    found
}

fn enum_members(btf: &Btf, ty: &Type) -> Option<Vec<(String, i64)>> {
    match ty {
        Type::Enum(e) => Some(
            e.members
                .iter()
                .map(|m| {
                    let v = if e.is_signed() {
                        i64::from(m.val() as i32)
                    } else {
                        i64::from(m.val())
                    };
                    (btf.resolve_name(m).unwrap_or_default(), v)
                })
                .collect(),
        ),
        // Values above i64::MAX (unsigned enum64) wrap; none of the enums
        // read here come near.
        Type::Enum64(e) => Some(
            e.members
                .iter()
                .map(|m| (btf.resolve_name(m).unwrap_or_default(), m.val() as i64))
                .collect(),
        ),
        _ => None,
    }
}

/// Enumerators and values of `enum <enum_name>`.
pub fn enum_values(btf: &Btf, enum_name: &str) -> Option<Vec<(String, i64)>> {
    let types = btf.resolve_types_by_name(enum_name).ok()?;
    types.iter().find_map(|t| enum_members(btf, t))
}

/// Enumerators and values of the anonymous enum that defines `enumerator`
/// (e.g. `TCP_ESTABLISHED`, whose enum has no name).
pub fn anon_enum_containing(btf: &Btf, enumerator: &str) -> Option<Vec<(String, i64)>> {
    let types = btf.resolve_types_by_name("").ok()?;
    types
        .iter()
        .filter_map(|t| enum_members(btf, t))
        .find(|members| members.iter().any(|(n, _)| n == enumerator))
}
