//! Progress bars on stderr for the library's progress events.

use indicatif::{ProgressBar, ProgressStyle};
use optima_llm::progress::{PerplexityProgress, PruneEvent};

fn bar(show: bool, template: &str) -> ProgressBar {
    let bar = if show { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

/// Draws a perplexity evaluation's windows (nothing when `show` is false); the bar clears when
/// the returned drawer is dropped.
pub struct PerplexityBar(ProgressBar);

impl PerplexityBar {
    pub fn new(show: bool) -> Self {
        Self(bar(show, "perplexity {bar:30} {pos}/{len} windows [{elapsed} < {eta}] {msg}"))
    }

    pub fn update(&self, p: PerplexityProgress) {
        self.0.set_length(p.windows as u64);
        self.0.set_position(p.windows_done as u64);
        self.0.set_message(format!("ppl {:.3}", p.ppl_so_far));
    }
}

impl Drop for PerplexityBar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Draws a pruning run's blocks and the layer being solved.
pub struct PruneBar(ProgressBar);

impl PruneBar {
    pub fn new(show: bool) -> Self {
        Self(bar(show, "pruning {bar:30} block {pos}/{len} {elapsed_precise} {msg}"))
    }

    pub fn update(&self, event: PruneEvent<'_>) {
        match event {
            PruneEvent::Resumed { first_block, blocks, checkpoint } => {
                self.0.println(format!("resuming after block {first_block} of {blocks} from {}", checkpoint.display()));
            }
            PruneEvent::AllocationBlock { block, blocks } => {
                self.0.set_length(blocks as u64);
                self.0.set_position(block as u64);
                self.0.set_message("allocation: dense pass");
            }
            PruneEvent::BlockStarted { block, blocks } => {
                self.0.set_length(blocks as u64);
                self.0.set_position(block as u64);
                self.0.set_message("forward and Hessians");
            }
            PruneEvent::LayerStarted { kind, .. } => self.0.set_message(kind.to_string()),
            PruneEvent::BlockFinished { block, .. } => self.0.set_position(block as u64 + 1),
            _ => {}
        }
    }
}

impl Drop for PruneBar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
