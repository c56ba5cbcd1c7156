//! Where a training step's time goes: the step split into its phases, timed when asked
//! ([`RunOptions::time_phases`](crate::RunOptions::time_phases)), for `cargo xtask throughput
//! --phases` and anyone comparing the loop with another framework's.

use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{KdError, Result};

/// Mean seconds per step spent in each phase of an epoch's training steps.
///
/// The device is synchronised at every phase boundary, so on an asynchronous device (a GPU)
/// each phase holds its own kernels' time, and the total is a little above an untimed step's.
/// CPU backends run each operation before returning, so there the split costs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepPhases {
    /// Waiting for the next batch (assembled on a worker while the previous step trains) and
    /// the method's `prepare_batch`.
    pub assemble: f64,
    /// The teacher's outputs: a forward pass, or a read from the teacher cache.
    pub teacher: f64,
    /// The student's forward pass.
    pub forward: f64,
    /// The method's loss, and the correct-prediction count.
    pub loss: f64,
    /// Reading the loss terms and the count back to the host (one transfer).
    pub read_back: f64,
    /// The backward pass, and collecting the parameters' gradients.
    pub backward: f64,
    /// The optimiser's update of every parameter.
    pub optimizer: f64,
    /// The method's `after_step` and the side models' steps.
    pub after_step: f64,
    /// Steps timed.
    pub steps: usize,
}

impl StepPhases {
    /// The phases with their names, in the order a step runs them.
    pub fn named(&self) -> [(&'static str, f64); 8] {
        [
            ("assemble", self.assemble),
            ("teacher", self.teacher),
            ("forward", self.forward),
            ("loss", self.loss),
            ("read_back", self.read_back),
            ("backward", self.backward),
            ("optimizer", self.optimizer),
            ("after_step", self.after_step),
        ]
    }

    /// Seconds of a whole step.
    pub fn total(&self) -> f64 {
        self.named().iter().map(|(_, s)| s).sum()
    }

    /// Sums turned into means per step.
    fn per_step(mut self) -> Self {
        let n = self.steps.max(1) as f64;
        for slot in self.slots() {
            *slot /= n;
        }
        self
    }

    fn slots(&mut self) -> [&mut f64; 8] {
        [
            &mut self.assemble,
            &mut self.teacher,
            &mut self.forward,
            &mut self.loss,
            &mut self.read_back,
            &mut self.backward,
            &mut self.optimizer,
            &mut self.after_step,
        ]
    }
}

/// One phase of a step.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    Assemble,
    Teacher,
    Forward,
    Loss,
    ReadBack,
    Backward,
    Optimizer,
    AfterStep,
}

/// A stopwatch over an epoch's steps; does nothing (not even read the clock) when off.
pub(crate) struct PhaseClock {
    device: Option<Device>,
    lap_started: Instant,
    sums: StepPhases,
}

impl PhaseClock {
    pub(crate) fn new(device: &Device, on: bool) -> Self {
        PhaseClock { device: on.then(|| device.clone()), lap_started: Instant::now(), sums: StepPhases::default() }
    }

    /// Ends `phase` here: the time since the last lap goes to it.
    pub(crate) fn lap(&mut self, phase: Phase) -> Result<()> {
        let Some(device) = &self.device else { return Ok(()) };
        device.sync().map_err(|e| KdError::Record(format!("synchronising the device to time a step: {e:?}")))?;
        let now = Instant::now();
        let seconds = (now - self.lap_started).as_secs_f64();
        self.lap_started = now;
        let s = &mut self.sums;
        *match phase {
            Phase::Assemble => &mut s.assemble,
            Phase::Teacher => &mut s.teacher,
            Phase::Forward => &mut s.forward,
            Phase::Loss => &mut s.loss,
            Phase::ReadBack => &mut s.read_back,
            Phase::Backward => &mut s.backward,
            Phase::Optimizer => &mut s.optimizer,
            Phase::AfterStep => &mut s.after_step,
        } += seconds;
        if let Phase::AfterStep = phase {
            s.steps += 1;
        }
        Ok(())
    }

    /// The epoch's means per step, when timing was on.
    pub(crate) fn finish(self) -> Option<StepPhases> {
        self.device.map(|_| self.sums.per_step())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_off_clock_records_nothing_and_an_on_clock_averages_per_step() {
        let device = Device::flex();
        let mut off = PhaseClock::new(&device, false);
        off.lap(Phase::Forward).unwrap();
        assert_eq!(off.finish(), None);

        let mut on = PhaseClock::new(&device, true);
        for _ in 0..4 {
            for phase in [Phase::Assemble, Phase::Forward, Phase::Backward, Phase::AfterStep] {
                on.lap(phase).unwrap();
            }
        }
        let phases = on.finish().unwrap();
        assert_eq!(phases.steps, 4);
        assert_eq!(phases.teacher, 0.0, "a phase never lapped stays 0");
        let total: f64 = phases.named().iter().map(|(_, s)| s).sum();
        assert_eq!(total, phases.total());
        assert!(phases.forward >= 0.0 && phases.total() >= 0.0);
    }
}
