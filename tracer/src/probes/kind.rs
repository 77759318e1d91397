//! How a program is attached, and when a hook is wanted at all.

/// How a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// BTF-typed raw tracepoint (`tp_btf`): needs BTF, no tracefs.
    TpBtf,
    /// Raw tracepoint: no BTF, no tracefs; arguments as in `tp_btf`.
    RawTracepoint,
    /// Classic tracepoint: fields at offsets from its tracefs format file.
    Tracepoint,
    /// BPF trampoline on function entry: needs BTF and trampoline support.
    Fentry,
    /// BPF trampoline on function exit: needs BTF and trampoline support.
    Fexit,
    /// Probe at function entry: needs CONFIG_KPROBES.
    Kprobe,
    /// Return probe: needs CONFIG_KPROBES.
    Kretprobe,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::TpBtf => "tp_btf",
            Kind::RawTracepoint => "raw_tracepoint",
            Kind::Tracepoint => "tracepoint",
            Kind::Fentry => "fentry",
            Kind::Fexit => "fexit",
            Kind::Kprobe => "kprobe",
            Kind::Kretprobe => "kretprobe",
        }
    }

    pub const ALL: [Kind; 7] = [
        Kind::TpBtf,
        Kind::RawTracepoint,
        Kind::Tracepoint,
        Kind::Fentry,
        Kind::Fexit,
        Kind::Kprobe,
        Kind::Kretprobe,
    ];

    /// The kind named `name` (as printed by [`Kind::name`]).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// When a hook is wanted at all (beyond the mechanisms existing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Always,
    /// Only where `tcp:tcp_send_reset` misses resets sent with no full socket
    /// (before 6.10 it fires only `if (sk && sk_fullsock(sk))`).
    SendResetMissesNoSocket,
}
