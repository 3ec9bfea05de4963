//! `kvrun check`: the table of what would be resolved — VAR, VAULT, SECRET, VERSION,
//! STATUS — never values. Exit 0 when every required secret resolves, 1 otherwise
//! (125 stays reserved for kvrun's own failures: usage, configuration, identity).

#![allow(clippy::print_stdout, reason = "the table is check's output")]

use crate::config::Plan;
use crate::resolve::Resolution;

pub const EXIT_SOME_FAILED: i32 = 1;

/// Prints the table and returns the exit status.
pub fn print(plan: &Plan, resolution: &Resolution) -> i32 {
    let mut rows = vec![[
        "VAR".to_owned(),
        "VAULT".to_owned(),
        "SECRET".to_owned(),
        "VERSION".to_owned(),
        "STATUS".to_owned(),
    ]];
    let mut failed = false;
    for binding in &plan.bindings {
        let outcome = resolution.outcomes.get(&binding.secret);
        let (version, status) = match outcome {
            Some(Ok(fetched)) => (
                fetched
                    .version
                    .clone()
                    .or_else(|| binding.secret.version.clone())
                    .unwrap_or_else(|| "latest".to_owned()),
                "ok".to_owned(),
            ),
            Some(Err(e)) if binding.optional && e.is_absent() => (
                binding
                    .secret
                    .version
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                format!("absent, optional ({e})"),
            ),
            Some(Err(e)) => {
                failed = true;
                (
                    binding
                        .secret
                        .version
                        .clone()
                        .unwrap_or_else(|| "-".to_owned()),
                    format!("error: {e}"),
                )
            }
            None => {
                failed = true;
                ("-".to_owned(), "error: not resolved".to_owned())
            }
        };
        rows.push([
            binding.var.clone(),
            binding.secret.vault.origin(),
            binding.secret.name.clone(),
            version,
            status,
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (c, cell) in row.iter().enumerate() {
            if c < 4 {
                out.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    print!("{out}");
    if failed { EXIT_SOME_FAILED } else { 0 }
}
