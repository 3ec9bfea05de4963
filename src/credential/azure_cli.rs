//! The Azure CLI of a signed-in developer (protocol reference §7):
//! `az account get-access-token --output json --resource <audience>`, run directly
//! (an argv, never a shell), with stdin closed, a time limit and no colour codes.
//! The token comes back on stdout, which is read into zeroizing memory.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::process::Command;
use zeroize::Zeroizing;

use super::{CredentialError, ErrorKind, token_response, unix_now};
use crate::retry::Deadline;
use crate::secret::AccessToken;

const SOURCE: &str = "Azure CLI";
/// `az` starts a Python interpreter; the SDKs allow it 10 s, kvrun a little more
/// within the overall deadline.
const MAX_RUNTIME: Duration = Duration::from_secs(30);
/// az's JSON is a few KB; anything past this is not read.
const MAX_OUTPUT: usize = 64 * 1024;

/// `az` uses the signed-in account and its tenant; kvrun passes only the audience.
#[derive(Debug, Default)]
pub struct AzureCli;

impl AzureCli {
    pub fn description(&self) -> String {
        format!("{SOURCE} (az account get-access-token)")
    }

    pub async fn get_token(
        &self,
        deadline: Deadline,
        audience: &str,
    ) -> Result<AccessToken, CredentialError> {
        let source = self.description();
        let fail = |kind, message: String| CredentialError::new(&source, kind, message);
        if !audience
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
        {
            return Err(fail(
                ErrorKind::Misconfigured,
                format!("refusing to pass the audience '{audience}' to az"),
            ));
        }
        let mut command = Command::new("az");
        command.args([
            "account",
            "get-access-token",
            "--output",
            "json",
            "--resource",
            audience,
        ]);
        command
            .env("AZURE_CORE_NO_COLOR", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                fail(
                    ErrorKind::Unavailable,
                    "az is not installed (not found on PATH)".to_owned(),
                )
            } else {
                fail(ErrorKind::Unavailable, format!("cannot run az: {e}"))
            }
        })?;
        let limit = deadline.remaining().min(MAX_RUNTIME);
        let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
        // Both pipes at once (az could fill one while kvrun waits on the other), each
        // capped; the token's buffer is sized up front so it never reallocates.
        let collect = async {
            let mut out = Zeroizing::new(Vec::with_capacity(MAX_OUTPUT + 1));
            let mut err = Vec::with_capacity(4096);
            let read_out = async {
                match stdout.as_mut() {
                    Some(pipe) => pipe
                        .take(MAX_OUTPUT as u64)
                        .read_to_end(&mut out)
                        .await
                        .map(drop),
                    None => Ok(()),
                }
            };
            let read_err = async {
                match stderr.as_mut() {
                    Some(pipe) => pipe
                        .take(MAX_OUTPUT as u64)
                        .read_to_end(&mut err)
                        .await
                        .map(drop),
                    None => Ok(()),
                }
            };
            let (read_out, read_err) = tokio::join!(read_out, read_err);
            read_out?;
            read_err?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err))
        };
        let (status, stdout, stderr) = tokio::time::timeout(limit, collect)
            .await
            .map_err(|_| {
                fail(
                    ErrorKind::GaveUp,
                    format!("az did not finish within {} s", limit.as_secs()),
                )
            })?
            .map_err(|e| {
                fail(
                    ErrorKind::GaveUp,
                    format!("reading az's output failed: {e}"),
                )
            })?;
        if status.success() {
            return token_response::parse(&stdout, unix_now())
                .map_err(|e| fail(ErrorKind::Rejected, format!("unusable output from az: {e}")));
        }
        let stderr = String::from_utf8_lossy(&stderr);
        if status.code() == Some(127) {
            return Err(fail(
                ErrorKind::Unavailable,
                "az is not installed".to_owned(),
            ));
        }
        let not_logged_in = (stderr.contains("az login") || stderr.contains("az account set"))
            && !stderr.contains("AADSTS");
        let summary = summarize(&stderr);
        if not_logged_in {
            return Err(
                fail(ErrorKind::Unavailable, format!("not signed in: {summary}")).with_hint(
                    "run 'az login' (and 'az account set --subscription ...' if needed)",
                ),
            );
        }
        Err(fail(
            ErrorKind::Rejected,
            format!("az failed ({status}): {summary}"),
        ))
    }
}

/// The first meaningful line of az's stderr, with anything that looks like a token
/// left out (az does not print tokens there, but kvrun does not rely on that).
fn summarize(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("accessToken") && !l.contains("eyJ"))
        .map(|l| l.trim_start_matches("ERROR: ").to_owned())
        .next()
        .unwrap_or_else(|| "no message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_summary_never_echoes_tokens() {
        assert_eq!(
            summarize("\nERROR: Please run 'az login' to setup account.\n"),
            "Please run 'az login' to setup account."
        );
        assert_eq!(summarize("{\"accessToken\": \"secret\"}\nboom"), "boom");
        assert_eq!(summarize("eyJ0eXAi.abc.def\n"), "no message");
    }
}
