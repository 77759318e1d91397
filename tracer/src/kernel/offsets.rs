//! [`KernelOffsets`]: every struct member offset and enum value the kernel
//! side reads, looked up in the running kernel's BTF with the lookups of
//! [`super::btf`].

use btf_rs::{Btf, Type};
use tracer_common::{KernelOffsets, OFFSET_NONE};

use super::KernelError;
use super::btf::{
    Structs, enum_values, find_member, lookup, offset_of, optional_in, peel, required_in,
};

/// `RLIMIT_NOFILE` on x86_64 and arm64 (asm-generic/resource.h).
const RLIMIT_NOFILE: usize = 7;

/// `offsetof(struct signal_struct, rlim[RLIMIT_NOFILE].rlim_cur)`, or
/// `OFFSET_NONE` if the layout is not the expected array of `struct rlimit`.
fn rlim_nofile_cur(btf: &Btf, structs: &Structs) -> Result<u32, KernelError> {
    let Some((rlim, Type::Array(arr))) = offset_of(btf, structs, "signal_struct", &["rlim"])?
    else {
        return Ok(OFFSET_NONE);
    };
    if arr.len() <= RLIMIT_NOFILE {
        return Err(KernelError::Unexpected(format!(
            "signal_struct.rlim has {} entries, RLIMIT_NOFILE is {RLIMIT_NOFILE}",
            arr.len()
        )));
    }
    let elem = btf.resolve_chained_type(&arr).map_err(lookup("rlimit"))?;
    let Type::Struct(rlimit) = peel(btf, elem).map_err(lookup("rlimit"))? else {
        return Ok(OFFSET_NONE);
    };
    let Some(cur) = find_member(btf, &rlimit, "rlim_cur", 0).map_err(lookup("rlimit"))? else {
        return Ok(OFFSET_NONE);
    };
    if cur.bitfield {
        return Err(KernelError::Bitfield {
            strukt: "rlimit".into(),
            member: "rlim_cur".into(),
        });
    }
    let off = rlim as usize + RLIMIT_NOFILE * rlimit.size() + cur.bit_offset as usize / 8;
    u32::try_from(off).map_err(|_| KernelError::Unexpected("rlim offset overflows u32".into()))
}

/// `ns.inum` in `struct net`. The member has been `inum` in `struct
/// ns_common` since 3.8; the loop leaves room for a rename.
fn net_ns_inum(btf: &Btf, structs: &Structs) -> Result<u32, KernelError> {
    for path in [&["ns", "inum"][..], &["ns", "ns_inum"][..]] {
        if let Some((off, _)) = offset_of(btf, structs, "net", path)? {
            return Ok(off);
        }
    }
    required_in(btf, structs, "net", &["ns", "inum"])
}

/// Fills every field of [`KernelOffsets`] from BTF. Missing required
/// members are errors naming struct and member; optional ones (IPv6
/// addresses, `skc_net` and `nd_net` without CONFIG_NET_NS, the `signal`
/// rlimit path, `sk_protocol` where it is a bitfield) are `OFFSET_NONE`.
/// Offsets of `sock_common` members are taken through `struct
/// sock.__sk_common`, i.e. relative to a `struct sock *`.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, KernelError> {
    let structs = Structs::default();
    let required_offset = |root: &str, path: &[&str]| required_in(btf, &structs, root, path);
    let optional_offset = |root: &str, path: &[&str]| optional_in(btf, &structs, root, path);
    let skc = |m: &str| required_offset("sock", &["__sk_common", m]);
    let skc_opt = |m: &str| optional_offset("sock", &["__sk_common", m]);
    let task_signal = optional_offset("task_struct", &["signal"])?;
    Ok(KernelOffsets {
        skc_family: skc("skc_family")?,
        skc_state: skc("skc_state")?,
        skc_num: skc("skc_num")?,
        skc_dport: skc("skc_dport")?,
        skc_rcv_saddr: skc("skc_rcv_saddr")?,
        skc_daddr: skc("skc_daddr")?,
        skc_v6_rcv_saddr: skc_opt("skc_v6_rcv_saddr")?,
        skc_v6_daddr: skc_opt("skc_v6_daddr")?,
        // possible_net_t is empty without CONFIG_NET_NS.
        skc_net: optional_offset("sock", &["__sk_common", "skc_net", "net"])?,
        net_ns_inum: net_ns_inum(btf, &structs)?,
        net_cookie: optional_offset("net", &["net_cookie"])?,
        sk_lock_owned: required_offset("sock", &["sk_lock", "owned"])?,
        sk_socket: required_offset("sock", &["sk_socket"])?,
        sk_ack_backlog: required_offset("sock", &["sk_ack_backlog"])?,
        sk_max_ack_backlog: required_offset("sock", &["sk_max_ack_backlog"])?,
        // A u16 since 5.6; an 8-bit bitfield before, which cannot be read.
        sk_protocol: match required_offset("sock", &["sk_protocol"]) {
            Err(KernelError::Bitfield { .. }) => OFFSET_NONE,
            other => other?,
        },
        inet_sport: optional_offset("inet_sock", &["inet_sport"])?,
        socket_sk: required_offset("socket", &["sk"])?,
        socket_file: required_offset("socket", &["file"])?,
        file_private_data: required_offset("file", &["private_data"])?,
        file_inode: required_offset("file", &["f_inode"])?,
        inode_ino: required_offset("inode", &["i_ino"])?,
        skb_head: required_offset("sk_buff", &["head"])?,
        skb_data: required_offset("sk_buff", &["data"])?,
        skb_network_header: required_offset("sk_buff", &["network_header"])?,
        skb_transport_header: required_offset("sk_buff", &["transport_header"])?,
        skb_dev: required_offset("sk_buff", &["dev"])?,
        netdev_nd_net: optional_offset("net_device", &["nd_net", "net"])?,
        task_files: required_offset("task_struct", &["files"])?,
        files_fdt: required_offset("files_struct", &["fdt"])?,
        fdtable_max_fds: required_offset("fdtable", &["max_fds"])?,
        fdtable_fd: required_offset("fdtable", &["fd"])?,
        task_signal,
        signal_rlim_nofile_cur: if task_signal == OFFSET_NONE {
            OFFSET_NONE
        } else {
            rlim_nofile_cur(btf, &structs)?
        },
        io_kiocb_opcode: optional_offset("io_kiocb", &["opcode"])?,
        io_kiocb_file: optional_offset("io_kiocb", &["file"])?,
        io_op_accept: enum_values(btf, "io_uring_op")
            .and_then(|v| v.into_iter().find(|(n, _)| n == "IORING_OP_ACCEPT"))
            .and_then(|(_, v)| u32::try_from(v).ok())
            .unwrap_or(OFFSET_NONE),
        task_group_leader: optional_offset("task_struct", &["group_leader"])?,
        task_comm: optional_offset("task_struct", &["comm"])?,
        task_tgid: optional_offset("task_struct", &["tgid"])?,
        inode_mode: optional_offset("inode", &["i_mode"])?,
        current_task_btf: u32::from(
            enum_values(btf, "bpf_func_id")
                .is_some_and(|v| v.iter().any(|(n, _)| n == "BPF_FUNC_get_current_task_btf")),
        ),
        valid: 1,
    })
}
