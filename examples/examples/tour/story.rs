//! How the tour tells what happens: chapters, claims checked against measured numbers, and the
//! summary table at the end.

use std::fmt::Display;
use std::time::Duration;

/// The tour's narration and the record of every claim it checked.
#[derive(Default)]
pub struct Story {
    chapters: Vec<Chapter>,
}

struct Chapter {
    name: &'static str,
    summary: String,
    held: usize,
    failed: Vec<String>,
}

impl Story {
    /// Starts a chapter: `name` for the summary table, `title` for the narration.
    pub fn chapter(&mut self, name: &'static str, title: impl Display) {
        println!("\n{}. {title}", self.chapters.len() + 1);
        self.chapters.push(Chapter {
            name,
            summary: String::new(),
            held: 0,
            failed: Vec::new(),
        });
    }

    /// Tells what is being done.
    pub fn say(&self, text: impl Display) {
        println!("   {text}");
    }

    /// Records a claim of the current chapter, with the numbers that back it, and whether it held.
    pub fn check(&mut self, held: bool, claim: impl Display) {
        println!("   {} {claim}", if held { "ok  " } else { "FAIL" });
        if let Some(chapter) = self.chapters.last_mut() {
            if held {
                chapter.held += 1;
            } else {
                chapter.failed.push(claim.to_string());
            }
        }
    }

    /// The current chapter's line in the summary table.
    pub fn sum_up(&mut self, summary: impl Display) {
        if let Some(chapter) = self.chapters.last_mut() {
            chapter.summary = summary.to_string();
        }
    }

    /// Prints the summary table; true when every claim held.
    pub fn summary(&self, took: Duration) -> bool {
        let width = self
            .chapters
            .iter()
            .map(|c| c.summary.len())
            .max()
            .unwrap_or(0);
        println!("\nSummary");
        println!(
            "   {:<11}{:<width$}   checks",
            "chapter", "what the numbers showed"
        );
        println!("   {}", "-".repeat(11 + width + 12));
        let (mut held, mut failed) = (0, 0);
        for chapter in &self.chapters {
            let total = chapter.held + chapter.failed.len();
            let verdict = if chapter.failed.is_empty() {
                "ok"
            } else {
                "FAILED"
            };
            println!(
                "   {:<11}{:<width$}   {}/{} {verdict}",
                chapter.name, chapter.summary, chapter.held, total
            );
            held += chapter.held;
            failed += chapter.failed.len();
        }
        println!("   {}", "-".repeat(11 + width + 12));
        if failed == 0 {
            println!(
                "   all {held} checks held; the tour took {:.1} s",
                took.as_secs_f64()
            );
        } else {
            println!("   {failed} of {} checks FAILED:", held + failed);
            for chapter in &self.chapters {
                for claim in &chapter.failed {
                    println!("   - {}: {claim}", chapter.name);
                }
            }
        }
        failed == 0
    }
}
