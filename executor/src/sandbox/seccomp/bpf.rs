//! The program assembler: an architecture dispatch, then per architecture
//! a binary search over the system call numbers down to short linear runs,
//! each number leading to its rules' chain.

use seccompiler::sock_filter;

const LD_ABS_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// `__X32_SYSCALL_BIT`.
const X32: u32 = 0x4000_0000;
/// Runs this short are searched linearly.
const LEAF: usize = 4;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// An unconditional jump over `over` instructions.
fn skip(over: usize) -> sock_filter {
    stmt(JA, u32::try_from(over).unwrap_or(u32::MAX))
}

fn ret(value: u32) -> sock_filter {
    stmt(RET, value)
}

pub(super) struct Section {
    pub audit: u32,
    /// x86_64: calls with the x32 bit get the default action.
    pub x32: bool,
    /// Calls numbered above this fail with ENOSYS.
    pub enosys_above: Option<u32>,
    pub tree: Vec<sock_filter>,
}

/// A syscall's rules (their return value and conditions), tried in
/// order, then `default`. A rule without conditions ends the chain.
pub(super) fn chain(
    rules: Vec<(u32, Option<seccompiler::SeccompRule>)>,
    default: u32,
) -> Vec<sock_filter> {
    let mut out = Vec::new();
    for (action, rule) in rules {
        let Some(rule) = rule else {
            out.push(ret(action));
            return out;
        };
        // A failed condition jumps just past the rule's return, to the
        // next rule (seccompiler's own layout).
        let program: seccompiler::BpfProgram = rule.into();
        out.extend(program);
        out.push(ret(action));
    }
    out.push(ret(default));
    out
}

/// Dispatches on the syscall number (in the accumulator) to the chains
/// of `entries` (sorted by number); others get `default`. Neighbouring
/// numbers with the same chain share one range test and one copy of the
/// chain: Docker's profile allows most calls in long runs, and the
/// kernel's JIT (run at every install, that is every RUN step) takes
/// time in proportion to the program's length.
pub(super) fn tree(entries: &[(u32, Vec<sock_filter>)], default: u32) -> Vec<sock_filter> {
    let mut ranges: Vec<(u32, u32, &[sock_filter])> = Vec::new();
    for (nr, chain) in entries {
        match ranges.last_mut() {
            Some((_, high, last))
                if high.checked_add(1) == Some(*nr) && *last == chain.as_slice() =>
            {
                *high = *nr;
            }
            _ => ranges.push((*nr, *nr, chain)),
        }
    }
    range_tree(&ranges, default)
}

/// [`tree`] over ranges `(low, high, chain)`, sorted and disjoint: a
/// binary search down to short linear runs.
fn range_tree(ranges: &[(u32, u32, &[sock_filter])], default: u32) -> Vec<sock_filter> {
    let mut out = Vec::new();
    if ranges.len() <= LEAF {
        for &(low, high, chain) in ranges {
            // Past the chain when the number is not in [low, high].
            let over = chain.len();
            if low == high {
                test(&mut out, JEQ, low, false, over);
            } else {
                // Below low: past this range's second test and chain.
                let mut second = Vec::new();
                test(&mut second, JGT, high, true, over);
                test(&mut out, JGE, low, false, second.len() + over);
                out.extend(second);
            }
            out.extend_from_slice(chain);
        }
        out.push(ret(default));
        return out;
    }
    let (low, high) = ranges.split_at(ranges.len() / 2);
    let pivot = high[0].0;
    let low = range_tree(low, default);
    out.push(jump(JGE, pivot, 0, 1));
    out.push(skip(low.len()));
    out.extend(low);
    out.extend(range_tree(high, default));
    out
}

/// A conditional jump over `over` instructions when the test is `skip_if`
/// (true: taken, false: not taken), else on to the next instruction; a
/// jump too long for the 8-bit offset goes through an unconditional one.
fn test(out: &mut Vec<sock_filter>, code: u16, k: u32, skip_if: bool, over: usize) {
    match u8::try_from(over) {
        Ok(over) if skip_if => out.push(jump(code, k, over, 0)),
        Ok(over) => out.push(jump(code, k, 0, over)),
        Err(_) => {
            // Going on: to a jump over the long one; skipping: to the long one.
            if skip_if {
                out.push(jump(code, k, 1, 0));
            } else {
                out.push(jump(code, k, 0, 1));
            }
            out.push(skip(1));
            out.push(skip(over));
        }
    }
}

fn section(section: &Section, default: u32) -> Vec<sock_filter> {
    let mut out = vec![stmt(LD_ABS_W, NR)];
    if section.x32 {
        out.push(jump(JSET, X32, 0, 1));
        out.push(ret(default));
    }
    if let Some(last) = section.enosys_above {
        out.push(jump(JGT, last, 0, 1));
        out.push(ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs()));
    }
    out.extend_from_slice(&section.tree);
    out
}

/// The whole program: a call from an architecture no section covers
/// kills the process.
pub(super) fn program(sections: &[Section], default: u32) -> Vec<sock_filter> {
    let bodies: Vec<_> = sections.iter().map(|s| section(s, default)).collect();
    let mut out = vec![stmt(LD_ABS_W, ARCH)];
    let mut start = 2 * sections.len() + 2;
    for (n, (section, body)) in sections.iter().zip(&bodies).enumerate() {
        out.push(jump(JEQ, section.audit, 0, 1));
        // This jump is instruction 2n + 2.
        out.push(skip(start - (2 * n + 3)));
        start += body.len();
    }
    out.push(ret(libc::SECCOMP_RET_KILL_PROCESS));
    for body in bodies {
        out.extend(body);
    }
    out
}

/// Runs `program` on a call as the kernel would: the filter's return
/// value (the tests' kernel).
#[cfg(test)]
pub(super) fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = Vec::new();
    data.extend_from_slice(&nr.to_le_bytes());
    data.extend_from_slice(&arch.to_le_bytes());
    data.extend_from_slice(&0u64.to_le_bytes());
    for arg in args {
        data.extend_from_slice(&arg.to_le_bytes());
    }
    let mut a = 0u32;
    let mut pc = 0usize;
    loop {
        let insn = &program[pc];
        pc += 1;
        match insn.code {
            0x20 => {
                let at = insn.k as usize;
                a = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
            }
            0x54 => a &= insn.k,
            0x05 => pc += insn.k as usize,
            0x15 | 0x25 | 0x35 | 0x45 => {
                let taken = match insn.code {
                    0x15 => a == insn.k,
                    0x25 => a > insn.k,
                    0x35 => a >= insn.k,
                    _ => a & insn.k != 0,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            0x06 => return insn.k,
            code => panic!("unexpected instruction {code:#x} at {}", pc - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_and_trees_longer_than_a_conditional_jump_are_jumped_over() {
        // A chain of 300 returns: only its first is reached.
        let long: Vec<_> = (0..300).map(|n| ret(1000 + n)).collect();
        let entries: Vec<_> = (0..40u32)
            .map(|nr| (nr * 2, if nr == 7 { long.clone() } else { vec![ret(nr)] }))
            .collect();
        let program = program(
            &[Section {
                audit: 7,
                x32: false,
                enosys_above: Some(78),
                tree: tree(&entries, 99),
            }],
            99,
        );
        assert!(program.len() > 300);
        for nr in 0..40u32 {
            let expected = if nr == 7 { 1000 } else { nr };
            assert_eq!(run(&program, 7, nr * 2, [0; 6]), expected, "{nr}");
            // Numbers between the entries: the default.
            assert_eq!(
                run(&program, 7, nr * 2 + 1, [0; 6]),
                if nr == 39 {
                    libc::SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs()
                } else {
                    99
                }
            );
        }
        assert_eq!(run(&program, 8, 0, [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
    }

    #[test]
    fn neighbouring_numbers_with_one_chain_share_a_range_test() {
        // 0-99 allowed in runs broken by gaps and by other chains; 40-59
        // lead to a chain longer than a conditional jump reaches.
        let long: Vec<_> = (0..300).map(|n| ret(1000 + n)).collect();
        let expected = |nr: u32| match nr {
            10..=14 | 70..=72 => None,
            40..=59 => Some(1000),
            80 | 90 => Some(7),
            0..=99 => Some(1),
            _ => None,
        };
        let entries: Vec<_> = (0..100u32)
            .filter_map(|nr| {
                let chain = match expected(nr)? {
                    1000 => long.clone(),
                    value => vec![ret(value)],
                };
                Some((nr, chain))
            })
            .collect();
        let tree = tree(&entries, 99);
        // One copy of the long chain, a few tests per range.
        assert!(tree.len() < 300 + 60, "{} instructions", tree.len());
        let program = program(
            &[Section {
                audit: 7,
                x32: false,
                enosys_above: None,
                tree,
            }],
            99,
        );
        for nr in 0..120 {
            assert_eq!(
                run(&program, 7, nr, [0; 6]),
                expected(nr).unwrap_or(99),
                "{nr}"
            );
        }
    }
}
