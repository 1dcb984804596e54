//! The model thread's scheduler: continuous batching in vLLM's decode-first loop
//! (`vllm/v1/core/sched/scheduler.py`).
//!
//! Each step:
//! 1. admits a waiting request when a slot is free (at most `--parallel` requests run): its
//!    audio work, [`Pipeline::prepare`] (decode, log-mel, encoder, pruning, projection and the
//!    merge into the prompt embeddings), once per step so that the running requests wait for
//!    one encoder at a time;
//! 2. gives every generating sequence one token with one [`step_many`] call over all of them
//!    (one decoder pass over every row);
//! 3. spends the rest of the step's budget of [`STEP_TOKENS`] positions on prefill chunks of
//!    admitted requests, oldest first (at least one chunk per step). A request's chunks are
//!    the [`PREFILL_CHUNK`] positions from its prompt's start, as
//!    [`auris_llm::Qwen2Decoder::forward_embeds`] cuts them, whatever else runs: its logits
//!    are those it gets alone and those `auris ask` gets.
//!
//! A finished sequence, or one whose client went away, leaves the batch at the end of the step
//! and frees its slot. An error of one request (its audio, its context, its prefill) ends that
//! request only; an error of the shared decode step ends every sequence in it.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use auris::pipeline::{Response, TextStream};
use auris::{Error, Pipeline};
use auris_llm::{step_many, GenerateOptions, KvCache, Sequence, StopStrings, PREFILL_CHUNK};
use axum::http::StatusCode;
use candle_core::Tensor;

use super::metrics;
use super::wire::ApiError;
use super::worker::{self, Event, Job, Outcome};

/// Positions one step runs at most: the decode rows, then prefill chunks while they fit
/// (vLLM's `max_num_batched_tokens`). One chunk runs in every step that has one to run.
pub(super) const STEP_TOKENS: usize = PREFILL_CHUNK;

/// Where an admitted request is.
enum Stage {
    /// Its prompt goes through the decoder a chunk at a time; `cache` holds the positions done.
    Prefill {
        embeds: Tensor,
        cache: KvCache,
        started: Instant,
    },
    /// It generates, one token per step.
    Decode {
        seq: Box<Sequence>,
        started: Instant,
    },
}

/// A request in the batch.
struct Active<'p> {
    job: Job,
    /// Its decoding options (the server's, with the request's own).
    generate: GenerateOptions,
    /// The response so far ([`Pipeline::prepare`]'s), completed when it ends.
    response: Response,
    text: TextStream<'p>,
    stage: Stage,
    /// Why it ended early (its prefill failed).
    failed: Option<ApiError>,
}

impl Active<'_> {
    /// Positions its KV cache holds.
    fn cached(&self) -> usize {
        match &self.stage {
            Stage::Prefill { cache, .. } => cache.len(),
            Stage::Decode { seq, .. } => seq.position(),
        }
    }

    /// Prompt positions still to prefill.
    fn prompt_left(&self) -> usize {
        match &self.stage {
            Stage::Prefill { embeds, cache, .. } => {
                embeds.dim(1).unwrap_or(0).saturating_sub(cache.len())
            }
            Stage::Decode { .. } => 0,
        }
    }

    /// Whether it is done: failed, finished, or its client went away.
    fn done(&self) -> bool {
        self.failed.is_some()
            || match &self.stage {
                Stage::Decode { seq, .. } => seq.finished().is_some(),
                Stage::Prefill { .. } => self.job.events.is_closed(),
            }
    }
}

/// The batch on the model thread.
struct Scheduler<'p> {
    p: &'p Pipeline,
    base: &'p GenerateOptions,
    slots: usize,
    running: Vec<Active<'p>>,
    /// KV cache positions of all slots together, for the usage gauge.
    capacity: usize,
}

/// Runs jobs, up to `slots` at a time, until every sender is gone and the admitted ones ended.
pub(super) fn run(p: &Pipeline, base: &GenerateOptions, jobs: Receiver<Job>, slots: usize) {
    let slots = slots.max(1);
    let mut s = Scheduler {
        p,
        base,
        slots,
        running: Vec::with_capacity(slots),
        capacity: slots.saturating_mul(p.context_length()),
    };
    let mut open = true;
    loop {
        if open {
            open = s.admit(&jobs);
        }
        if s.running.is_empty() {
            if open {
                continue;
            }
            return;
        }
        s.step();
        s.retire();
    }
}

impl<'p> Scheduler<'p> {
    /// Takes one waiting job into a free slot (waiting for one when nothing runs) and prepares
    /// it. `false` once the queue is closed and empty.
    fn admit(&mut self, jobs: &Receiver<Job>) -> bool {
        if self.running.len() >= self.slots {
            return true;
        }
        let job = if self.running.is_empty() {
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return false,
            }
        } else {
            match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        };
        self.start(job);
        true
    }

    /// Prepares `job`'s prompt and puts it in the batch, or answers its error.
    fn start(&mut self, mut job: Job) {
        if job.events.is_closed() {
            return;
        }
        job.admission.start();
        let generate = worker::generate_options(self.base, &job.params);
        let prepared = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let request = worker::audio_request(&job.params, generate.clone());
            self.p.prepare(&request).map(|p| p.into_parts())
        }))
        .unwrap_or_else(|_| {
            Err(Error::Invariant(
                "the model thread panicked on this request",
            ))
        });
        match prepared {
            Ok((embeds, response)) => self.running.push(Active {
                job,
                generate,
                response,
                text: TextStream::new(self.p.tokenizer()),
                stage: Stage::Prefill {
                    embeds,
                    cache: self.p.decoder().new_cache(),
                    started: Instant::now(),
                },
                failed: None,
            }),
            Err(e) => answer(&job, Err(worker::api_error(e))),
        }
    }

    /// One step: a token for every generating sequence, then prefill chunks. A panic ends
    /// every request in the batch with a 500.
    fn step(&mut self) {
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let decoded = self.decode()?;
            self.prefill(decoded);
            Ok::<_, Error>(())
        }));
        let failure = match run {
            Ok(Ok(())) => return,
            Ok(Err(e)) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            Err(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the model thread panicked on this request",
            ),
        };
        tracing::error!("the batch step failed: {}", failure.message);
        for active in self.running.drain(..) {
            answer(&active.job, Err(failure.clone()));
        }
    }

    /// Gives every generating sequence its next token with one decoder pass over all of them
    /// and streams it; returns how many rows the pass ran.
    fn decode(&mut self) -> Result<usize, Error> {
        let mut seqs: Vec<&mut Sequence> = self
            .running
            .iter_mut()
            .filter_map(|a| match &mut a.stage {
                Stage::Decode { seq, .. } => Some(&mut **seq),
                Stage::Prefill { .. } => None,
            })
            .collect();
        let rows = seqs.iter().filter(|s| s.input().is_some()).count();
        if seqs.is_empty() {
            return Ok(0);
        }
        let tokens = step_many(self.p.decoder(), &mut seqs)?;
        drop(seqs);
        let decoding = self
            .running
            .iter_mut()
            .filter(|a| matches!(a.stage, Stage::Decode { .. }));
        for (active, token) in decoding.zip(tokens) {
            active.emit(token);
        }
        Ok(rows)
    }

    /// Runs the prefill chunks of this step ([`prefills_this_step`] after `decoded` decode
    /// rows), oldest request first; a request whose prompt is done starts generating and emits
    /// its first token.
    fn prefill(&mut self, decoded: usize) {
        let waiting: Vec<&mut Active<'p>> = self
            .running
            .iter_mut()
            .filter(|a| a.prompt_left() > 0 && !a.done())
            .collect();
        let n = prefills_this_step(waiting.iter().map(|a| a.prompt_left()), decoded);
        for active in waiting.into_iter().take(n) {
            if let Err(e) = active.prefill_chunk(self.p) {
                active.failed = Some(worker::api_error(e));
            }
        }
    }

    /// Answers every request that is done and frees its slot; the KV cache usage is the
    /// remaining ones' by the time a client has its answer.
    fn retire(&mut self) {
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(Active::done);
        self.running = running;
        metrics::kv_usage(self.running.iter().map(Active::cached).sum(), self.capacity);
        for active in done {
            if active.failed.is_none() && active.job.events.is_closed() {
                tracing::info!(
                    "request cancelled after {} tokens: the client went away",
                    active.generated()
                );
            }
            let (job, result) = active.finish(self.p);
            answer(&job, result);
        }
    }
}

impl Active<'_> {
    /// Runs the next chunk of the prompt; after the last one the sequence takes over and emits
    /// its first token.
    fn prefill_chunk(&mut self, p: &Pipeline) -> Result<(), Error> {
        let Stage::Prefill {
            embeds,
            cache,
            started,
        } = &mut self.stage
        else {
            return Ok(());
        };
        let (done, len) = (cache.len(), embeds.dim(1)?);
        let part = embeds.narrow(1, done, (len - done).min(PREFILL_CHUNK))?;
        let mut logits = p.decoder().forward_batch(&mut [auris_llm::SequenceInput {
            embeds: &part,
            cache,
        }])?;
        if cache.len() < len {
            return Ok(());
        }
        let logits = logits
            .pop()
            .ok_or(Error::Invariant("the decoder returned no logits"))?;
        self.response.timings.prefill = started.elapsed().as_secs_f64() * 1e3;
        let cache = std::mem::replace(cache, p.decoder().new_cache());
        let stops = StopStrings::new(self.job.params.stop.iter().cloned());
        let mut seq = Sequence::from_logits(
            cache,
            &logits,
            &self.response.prompt_token_ids,
            &self.generate,
        )?
        .with_stop_strings(stops);
        // The prompt's logits are pending: this chooses without running the model.
        let first = seq.step(p.decoder())?;
        // A stop id chosen first is the first token too, though it is not sent.
        self.job.admission.first_token();
        self.stage = Stage::Decode {
            seq: Box::new(seq),
            started: Instant::now(),
        };
        self.emit(first);
        Ok(())
    }

    /// Streams the text of `token` (if one was emitted) and cancels the sequence when its
    /// client went away.
    fn emit(&mut self, token: Option<u32>) {
        let Stage::Decode { seq, .. } = &mut self.stage else {
            return;
        };
        if let Some(id) = token {
            if let Ok(Some(piece)) = self.text.push(id) {
                let out = seq.push_text(&piece);
                if !out.is_empty() {
                    let _ = self.job.events.send(Event::Delta(out));
                }
            }
        }
        if self.job.events.is_closed() {
            seq.cancel();
        }
    }

    /// Tokens generated so far.
    fn generated(&self) -> usize {
        match &self.stage {
            Stage::Decode { seq, .. } => seq.generation().tokens.len(),
            Stage::Prefill { .. } => 0,
        }
    }

    /// The job and its outcome: the response completed, the held-back text sent.
    fn finish(self, p: &Pipeline) -> (Job, Result<Box<Outcome>, ApiError>) {
        let Active {
            job,
            mut response,
            stage,
            failed,
            ..
        } = self;
        let (mut seq, started) = match (stage, failed) {
            (_, Some(error)) => return (job, Err(error)),
            (Stage::Decode { seq, started }, None) => (seq, started),
            // The client went away before the first token: nobody reads the answer.
            (Stage::Prefill { .. }, None) => {
                let gone = ApiError::new(StatusCode::BAD_REQUEST, "the client went away");
                return (job, Err(gone));
            }
        };
        let generate_ms = started.elapsed().as_secs_f64() * 1e3;
        let result = p
            .complete(&mut response, seq.generation().clone(), generate_ms)
            .map_err(worker::api_error)
            .map(|()| worker::outcome(&job, &mut seq, response));
        (job, result)
    }
}

/// How many of the prompts still to prefill, oldest first, with `left` positions each, run a
/// chunk in a step that decoded `decoded` rows: while the step's [`STEP_TOKENS`] last, and at
/// least one, so that a prompt never waits behind a full batch.
fn prefills_this_step(left: impl IntoIterator<Item = usize>, decoded: usize) -> usize {
    let mut budget = STEP_TOKENS.saturating_sub(decoded);
    let mut n = 0;
    for chunk in left.into_iter().map(|l| l.min(PREFILL_CHUNK)) {
        if n > 0 && chunk > budget {
            break;
        }
        budget = budget.saturating_sub(chunk);
        n += 1;
    }
    n
}

/// Sends `job` its end and records it in the metrics.
fn answer(job: &Job, result: Result<Box<Outcome>, ApiError>) {
    job.admission.finish(&result);
    let _ = job.events.send(Event::Done(result));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_runs_one_prefill_chunk_at_least_and_more_while_the_budget_lasts() {
        assert_eq!(prefills_this_step([], 0), 0);
        // A long prompt runs one chunk beside a full batch, and stops the queue behind it.
        assert_eq!(prefills_this_step([1100], 8), 1);
        assert_eq!(prefills_this_step([600, 78], 0), 1);
        // Short prompts share a step.
        assert_eq!(prefills_this_step([78, 78, 103], 0), 3);
        assert_eq!(prefills_this_step([78, 78, 103], 300), 2);
        assert_eq!(prefills_this_step([100, 500], 0), 1);
        assert_eq!(prefills_this_step([100, 412, 1], 0), 2);
    }
}
