//! `kvrun-assets OUT_DIR`: writes kvrun's man pages and shell completions, rendered
//! from the `Cli` definition kvrun itself parses with, so they cannot drift from it.
//!
//! ```text
//! OUT_DIR/man/kvrun.1, OUT_DIR/man/kvrun-<subcommand>.1
//! OUT_DIR/completions/kvrun.bash, OUT_DIR/completions/_kvrun, OUT_DIR/completions/kvrun.fish
//! ```
//!
//! It prints the path of every file it wrote, one a line. A separate binary (not a
//! `kvrun` subcommand or build script) so that kvrun's own binary carries none of it.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{CommandFactory as _, ValueHint};
use clap_complete::Shell;
use roff::{Roff, bold, roman};

/// The shells whose completion directories the Debian package fills.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

fn main() {
    let code = match run(std::env::args_os().skip(1).collect()) {
        Ok(()) => 0,
        Err(e) => {
            // The one place this program reports an error; there is no logger here.
            let _ = writeln!(std::io::stderr().lock(), "kvrun-assets: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(args: Vec<OsString>) -> Result<()> {
    let [out_dir] = <[OsString; 1]>::try_from(args)
        .map_err(|_| anyhow::anyhow!("usage: kvrun-assets OUT_DIR"))?;
    let written = write_assets(Path::new(&out_dir))?;
    let mut stdout = std::io::stdout().lock();
    for path in written {
        writeln!(stdout, "{}", path.display())?;
    }
    Ok(())
}

/// Writes every asset under `out_dir` and returns their paths.
fn write_assets(out_dir: &Path) -> Result<Vec<PathBuf>> {
    let cmd = command()?;
    let man_dir = out_dir.join("man");
    let completion_dir = out_dir.join("completions");
    for dir in [&man_dir, &completion_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let mut written = Vec::new();
    for page in man_pages(&cmd)? {
        let path = man_dir.join(&page.file_name);
        std::fs::write(&path, page.source)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    for shell in SHELLS {
        let mut cmd = cmd.clone();
        let name = cmd.get_name().to_owned();
        let path = clap_complete::generate_to(shell, &mut cmd, name, &completion_dir)
            .with_context(|| format!("cannot write the {shell} completion"))?;
        written.push(path);
    }
    Ok(written)
}

/// kvrun's command line, with the value hints that only completions use.
fn command() -> Result<clap::Command> {
    let mut cmd = kvrun::cli::Cli::command();
    // Hints change what a shell offers, never what kvrun accepts, so they are set
    // here rather than in kvrun's definition: after `--`, complete a program and
    // then its own arguments; for --config, file names.
    for (id, hint) in [
        ("command", ValueHint::CommandWithArguments),
        ("config", ValueHint::FilePath),
    ] {
        if !cmd.get_arguments().any(|arg| arg.get_id() == id) {
            bail!("kvrun's command line has no argument `{id}`: update packaging/assets");
        }
        cmd = cmd.mut_arg(id, |arg| arg.value_hint(hint));
    }
    // `kvrun help` is clap's, not a command worth a page or a completion entry.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    Ok(cmd)
}

/// One rendered man page.
#[derive(Debug)]
struct ManPage {
    file_name: String,
    source: String,
}

/// The page of `cmd` and one per visible subcommand (`kvrun-check.1`), section 1.
fn man_pages(cmd: &clap::Command) -> Result<Vec<ManPage>> {
    let mut pages = vec![man_page(cmd, None)?];
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        pages.push(man_page(sub, Some(cmd))?);
    }
    Ok(pages)
}

/// Renders the page of `cmd`: kvrun itself, or a subcommand of `parent`.
///
/// clap_mangen renders the standard sections. The free text after the options
/// (`after_help`: examples, exit status, docs) it would put under one heading,
/// EXTRA, with its lines filled into a paragraph; instead each `Label:` block
/// becomes its own section, indented lines stay lines, and "Docs" joins SEE ALSO.
fn man_page(cmd: &clap::Command, parent: Option<&clap::Command>) -> Result<ManPage> {
    let top = parent.unwrap_or(cmd);
    let extra = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|text| parse_sections(&text.to_string()))
        .unwrap_or_default();
    let man = clap_mangen::Man::new(cmd.clone().after_help(None).after_long_help(None));

    let mut source = Vec::new();
    // The title line is written here: clap_mangen leaves the date argument out
    // when it is empty (shifting the source into its place) and gives a
    // subcommand's page no version. The date stays empty so that the page is the
    // same whenever it is built; the footer names the version instead.
    Roff::new().to_writer(&mut source)?;
    let title = man.get_filename();
    let title = title.trim_end_matches(".1").to_uppercase();
    let version = top.get_version().unwrap_or_default();
    let source_arg = format!("{} {version}", top.get_name());
    for arg in [&title, &source_arg] {
        if arg.contains(['"', '\\', '\n']) {
            bail!("cannot put {arg:?} in a man page title");
        }
    }
    writeln!(
        source,
        ".TH {title} 1 \"\" \"{source_arg}\" \"User Commands\""
    )?;
    man.render_name_section(&mut source)?;
    man.render_synopsis_section(&mut source)?;
    man.render_description_section(&mut source)?;
    if cmd.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(&mut source)?;
    }
    if cmd.get_subcommands().any(|sub| !sub.is_hide_set()) {
        man.render_subcommands_section(&mut source)?;
    }
    extra_sections(cmd, parent, &extra).to_writer(&mut source)?;

    let source = String::from_utf8(source).context("clap_mangen wrote a page that is not UTF-8")?;
    Ok(ManPage {
        file_name: man.get_filename(),
        source: dedupe_preamble(&source),
    })
}

/// The sections parsed from `after_help`, then SEE ALSO.
fn extra_sections(
    cmd: &clap::Command,
    parent: Option<&clap::Command>,
    sections: &[Section],
) -> Roff {
    let mut roff = Roff::new();
    let mut docs = Vec::new();
    for section in sections {
        if section.heading == "DOCS" {
            docs.extend(section.blocks.iter().cloned());
            continue;
        }
        roff.control("SH", [section.heading.as_str()]);
        render_blocks(&mut roff, &section.blocks);
    }

    // The other pages of this command: the top page names its subcommands' pages
    // and each subcommand's page names the top one.
    let related: Vec<String> = match parent {
        None => cmd
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(|sub| format!("{}-{}", cmd.get_name(), sub.get_name()))
            .collect(),
        Some(parent) => vec![parent.get_name().to_owned()],
    };
    if !related.is_empty() || !docs.is_empty() {
        roff.control("SH", ["SEE ALSO"]);
        let mut inlines = Vec::new();
        for (i, name) in related.iter().enumerate() {
            if i > 0 {
                inlines.push(roman(", "));
            }
            inlines.push(bold(name.as_str()));
            inlines.push(roman("(1)"));
        }
        if !inlines.is_empty() {
            roff.text(inlines);
        }
        render_blocks(&mut roff, &docs);
    }
    roff
}

fn render_blocks(roff: &mut Roff, blocks: &[Block]) {
    for block in blocks {
        roff.control("PP", []);
        match block {
            Block::Filled(text) => {
                roff.text([roman(text.as_str())]);
            }
            Block::Lines(lines) => {
                roff.control("nf", []);
                for line in lines {
                    roff.text([roman(line.as_str())]);
                }
                roff.control("fi", []);
            }
        }
    }
}

/// roff's `to_writer` starts every fragment with the same apostrophe preamble;
/// one at the top of the page is enough.
fn dedupe_preamble(source: &str) -> String {
    let preamble = Roff::new().render();
    if preamble.is_empty() {
        return source.to_owned();
    }
    let mut parts = source.split(preamble.as_str());
    let mut out = parts.next().unwrap_or_default().to_owned();
    out.push_str(&preamble);
    for part in parts {
        out.push_str(part);
    }
    out
}

/// A man page section parsed from help text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Section {
    heading: String,
    blocks: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    /// Prose: man fills it to the terminal's width.
    Filled(String),
    /// Indented lines (examples, tables): kept line by line, indentation removed.
    Lines(Vec<String>),
}

/// Splits help text into sections. A line that starts at column 0 with a short
/// label and a colon (`Examples:`, `Exit status: ...`) opens a section headed by
/// the label in capitals; text after the colon and unindented lines after it are
/// prose; indented lines are kept as lines. Text before any label goes to NOTES.
fn parse_sections(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut last_blank = true;
    for line in text.lines() {
        if line.trim().is_empty() {
            last_blank = true;
            continue;
        }
        let indented = line.starts_with(char::is_whitespace);
        if !indented && let Some((label, rest)) = label(line) {
            sections.push(Section {
                heading: label.to_uppercase(),
                blocks: Vec::new(),
            });
            if !rest.is_empty() {
                push_prose(&mut sections, rest, true);
            }
            last_blank = false;
            continue;
        }
        if sections.is_empty() {
            sections.push(Section {
                heading: "NOTES".to_owned(),
                blocks: Vec::new(),
            });
        }
        if indented {
            if let Some(section) = sections.last_mut() {
                match section.blocks.last_mut() {
                    Some(Block::Lines(lines)) if !last_blank => lines.push(line.to_owned()),
                    _ => section.blocks.push(Block::Lines(vec![line.to_owned()])),
                }
            }
        } else {
            push_prose(&mut sections, line.trim(), last_blank);
        }
        last_blank = false;
    }
    for section in &mut sections {
        for block in &mut section.blocks {
            if let Block::Lines(lines) = block {
                dedent(lines);
            }
        }
    }
    sections
}

/// `Label: rest` where the label is one to three words of letters.
fn label(line: &str) -> Option<(&str, &str)> {
    let (label, rest) = line.split_once(':')?;
    let words = label.split(' ').count();
    let letters = label.chars().all(|c| c.is_ascii_alphabetic() || c == ' ');
    // "https://..." has a colon too: a label is followed by a space or the line's end.
    let ends = rest.is_empty() || rest.starts_with(' ');
    (!label.is_empty() && (1..=3).contains(&words) && letters && ends).then(|| (label, rest.trim()))
}

fn push_prose(sections: &mut [Section], text: &str, new_block: bool) {
    let Some(section) = sections.last_mut() else {
        return;
    };
    match section.blocks.last_mut() {
        Some(Block::Filled(prose)) if !new_block => {
            prose.push(' ');
            prose.push_str(text);
        }
        _ => section.blocks.push(Block::Filled(text.to_owned())),
    }
}

/// Removes the indentation all `lines` share (counted in characters, so a
/// non-ASCII space cannot split a character).
fn dedent(lines: &mut [String]) {
    let indent = lines
        .iter()
        .map(|line| line.chars().take_while(|c| c.is_whitespace()).count())
        .min()
        .unwrap_or(0);
    for line in lines {
        *line = line.chars().skip(indent).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_text_becomes_sections() {
        let text = "Examples:\n  a --x        does x\n  b\n\nExit status: 0 when\nall is well.\nDocs: https://example.com/x#y";
        assert_eq!(
            parse_sections(text),
            [
                Section {
                    heading: "EXAMPLES".into(),
                    blocks: vec![Block::Lines(vec!["a --x        does x".into(), "b".into()])],
                },
                Section {
                    heading: "EXIT STATUS".into(),
                    blocks: vec![Block::Filled("0 when all is well.".into())],
                },
                Section {
                    heading: "DOCS".into(),
                    blocks: vec![Block::Filled("https://example.com/x#y".into())],
                },
            ]
        );
    }

    #[test]
    fn unlabelled_text_and_urls_are_not_headings() {
        let sections = parse_sections("see https://example.com: it is\n\n  x");
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].heading, "NOTES");
        assert_eq!(
            sections[0].blocks,
            [
                Block::Filled("see https://example.com: it is".into()),
                Block::Lines(vec!["x".into()]),
            ]
        );
    }

    #[test]
    fn kvrun_pages_have_the_expected_sections() {
        let cmd = command().unwrap();
        let pages = man_pages(&cmd).unwrap();
        let names: Vec<_> = pages.iter().map(|p| p.file_name.as_str()).collect();
        assert_eq!(names, ["kvrun.1", "kvrun-check.1"]);

        let top = &pages[0].source;
        for needle in [
            ".TH KVRUN 1 \"\" \"kvrun 0.1.0\" \"User Commands\"",
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH SUBCOMMANDS",
            ".SH EXAMPLES",
            ".SH \"EXIT STATUS\"",
            ".SH \"SEE ALSO\"",
            "KVRUN_CONFIG",
            "kvrun\\-check",
        ] {
            assert!(top.contains(needle), "kvrun.1 lacks {needle}:\n{top}");
        }
        assert!(!top.contains(".SH EXTRA"), "{top}");
        assert_eq!(top.matches(Roff::new().render().as_str()).count(), 1);
        assert!(
            pages[1]
                .source
                .contains(".TH KVRUN-CHECK 1 \"\" \"kvrun 0.1.0\"")
        );
    }

    #[test]
    fn writes_every_asset() {
        let dir = std::env::temp_dir().join(format!("kvrun-assets-test-{}", std::process::id()));
        let written = write_assets(&dir).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "man/kvrun.1",
                "man/kvrun-check.1",
                "completions/kvrun.bash",
                "completions/_kvrun",
                "completions/kvrun.fish",
            ]
        );
        let bash = std::fs::read_to_string(dir.join("completions/kvrun.bash")).unwrap();
        assert!(
            bash.contains("--config") && bash.contains("complete -F"),
            "{bash}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
