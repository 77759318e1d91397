//! One line out of a kernel refusal: aya reports a refused program load as
//! "the BPF_PROG_LOAD syscall failed. Verifier output: <the whole verifier
//! log>: <errno>", twenty lines or more. An operator needs the line that
//! says why (`R1 invalid mem access 'scalar'`, `arg#0 type is not a
//! struct`); the rest stays available behind `-v` or `RUST_LOG=debug`.

const LOG_MARK: &str = "Verifier output:";

/// The one-line form of a kernel's answer: unchanged when it is one line
/// without a verifier log, else "<what failed> (<errno>): <last meaningful
/// line of the log>".
pub fn summarize(answer: &str) -> String {
    let Some(at) = answer.find(LOG_MARK) else {
        return first_line(answer);
    };
    let head = answer[..at].trim().trim_end_matches('.');
    let log = &answer[at + LOG_MARK.len()..];
    // aya appends the io error after the log: ": Permission denied (os error 13)".
    let (log, errno) = match log.rfind(": ") {
        Some(i) if log[i + 2..].contains("os error") => (&log[..i], Some(log[i + 2..].trim())),
        _ => (log, None),
    };
    let why = log.lines().map(str::trim).rev().find(|l| meaningful(l));
    match (why, errno) {
        // An empty log: the errno is all the kernel said.
        (None, Some(e)) if head.contains(e) => head.to_string(),
        (None, Some(e)) => format!("{head} ({e})"),
        (None, None) => head.to_string(),
        (Some(why), Some(e)) => format!("{head} ({e}): {why}"),
        (Some(why), None) => format!("{head}: {why}"),
    }
}

fn first_line(s: &str) -> String {
    let mut lines = s.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    match lines.next() {
        Some(_) => format!("{first} (more with -v)"),
        None => first,
    }
}

/// A log line that says something about the refusal: not statistics, not an
/// instruction dump, not register state.
fn meaningful(line: &str) -> bool {
    if line.is_empty() || line.starts_with(';') {
        return false;
    }
    const NOISE: &[&str] = &[
        "processed ",
        "verification time",
        "stack depth",
        "-- END PROG LOAD LOG --",
        "func#",
        "Validating ",
        "reg type unsupported",
    ];
    if NOISE.iter().any(|n| line.starts_with(n)) {
        return false;
    }
    // "12: (85) call bpf_probe_read_kernel#113" and "12: R0=..." dumps.
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && line[digits..].starts_with(':') {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn one_line_answers_stay() {
        assert_eq!(
            summarize("Permission denied (os error 13)"),
            "Permission denied (os error 13)"
        );
    }

    #[test]
    fn a_verifier_log_becomes_its_last_meaningful_line() {
        let answer = "the BPF_PROG_LOAD syscall failed. Verifier output: func#0 @0\n\
            arg#0 type is not a struct\n\
            Unrecognized arg#0 type PTR\n\
            ; pub fn inet_csk_accept_fexit(ctx: FExitContext) -> i32 {\n\
            0: (bf) r6 = r1\n\
            1: R1=ctx() R6_w=ctx()\n\
            processed 0 insns (limit 1000000) max_states_per_insn 0\n\
            : Invalid argument (os error 22)";
        assert_eq!(
            summarize(answer),
            "the BPF_PROG_LOAD syscall failed (Invalid argument (os error 22)): Unrecognized arg#0 type PTR"
        );
    }

    #[test]
    fn a_log_of_noise_only_leaves_the_errno() {
        let answer =
            "load failed. Verifier output: processed 5 insns\n: Permission denied (os error 13)";
        assert_eq!(
            summarize(answer),
            "load failed (Permission denied (os error 13))"
        );
        // aya on 6.18 for fentry without trampolines.
        let answer = "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). \
            Verifier output: : Operation not permitted (os error 1)";
        assert_eq!(
            summarize(answer),
            "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn other_multi_line_answers_keep_their_first_line() {
        assert_eq!(summarize("first\nsecond"), "first (more with -v)");
    }
}
