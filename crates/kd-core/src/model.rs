//! What a classifier returns, and the traits for students and teachers.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::data::Batch;
use crate::error::{KdError, Result};

/// The output of a classifier: logits plus what feature and relational methods read.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// `[batch, classes]`.
    pub logits: Tensor<2>,
    /// Stage outputs, `[batch, channels, height, width]` (an MLP's hidden layers are
    /// `[batch, width, 1, 1]`), shallow to deep, each after its activation.
    pub features: Vec<Tensor<4>>,
    /// The penultimate embedding, `[batch, dim]` (pooled, before the classifier); `None` for
    /// outputs that have none (a teacher cache stores logits only). Read it with
    /// [`ModelOutput::embedding`], which names what is missing.
    pub embedding: Option<Tensor<2>>,
    /// Pre-activation stage outputs and the BatchNorm before each stage's last ReLU, only from
    /// [`Classifier::forward_preact`] (OFD reads them); `None` from [`Classifier::forward`], so
    /// methods that do not read them pay nothing. Read it with [`ModelOutput::preact`].
    pub preact: Option<PreActivation>,
}

/// What OFD (Heo et al., ICCV 2019) reads from a network: each stage's output before its last
/// ReLU (mdistiller's `preact_feats[1:]`) and the affine parameters of the BatchNorm feeding
/// that ReLU (mdistiller's `get_bn_before_relu`).
#[derive(Debug, Clone)]
pub struct PreActivation {
    /// Stage outputs before the last ReLU, `[batch, channels, height, width]`, shallow to deep,
    /// one per stage (the stages of [`ModelOutput::features`]`[1..]`; an MLP's every hidden layer).
    pub features: Vec<Tensor<4>>,
    /// Per stage, `(weight, bias)` of the BatchNorm before that ReLU, `[channels]` each.
    pub bn_before_relu: Vec<(Tensor<1>, Tensor<1>)>,
}

impl PreActivation {
    fn map(&self, f: impl Fn(&Tensor<4>) -> Tensor<4>, g: impl Fn(&Tensor<1>) -> Tensor<1>) -> Self {
        PreActivation {
            features: self.features.iter().map(f).collect(),
            bn_before_relu: self.bn_before_relu.iter().map(|(w, b)| (g(w), g(b))).collect(),
        }
    }
}

impl ModelOutput {
    /// Outputs of a forward pass: logits, stage features and the embedding (no pre-activation
    /// features; add them with [`ModelOutput::with_preact`]).
    pub fn new(logits: Tensor<2>, features: Vec<Tensor<4>>, embedding: Option<Tensor<2>>) -> Self {
        ModelOutput { logits, features, embedding, preact: None }
    }

    /// Outputs with logits only: no features, no embedding.
    pub fn logits_only(logits: Tensor<2>) -> Self {
        Self::new(logits, Vec::new(), None)
    }

    /// The same outputs with pre-activation features and BatchNorm parameters.
    pub fn with_preact(self, preact: PreActivation) -> Self {
        ModelOutput { preact: Some(preact), ..self }
    }

    /// The pre-activation features, or an error saying that `method` needs them and how to get
    /// them (a network whose forward pass gives them; a teacher cache stores logits only).
    pub fn preact(&self, method: &str, who: &str) -> Result<&PreActivation> {
        self.preact.as_ref().ok_or_else(|| KdError::Missing {
            method: method.into(),
            what: format!(
                "the {who}'s pre-activation stage features and BatchNorm parameters, which these outputs do not have \
                 (they come from `Classifier::forward_preact`; a teacher cache stores logits only)"
            ),
        })
    }

    /// The same outputs without their autodiff graph (the values the loss saw).
    pub fn detached(&self) -> ModelOutput {
        self.without_autodiff()
    }

    /// The penultimate embedding, or an error saying that `method` needs one these outputs lack.
    pub fn embedding(&self, method: &str) -> Result<&Tensor<2>> {
        self.embedding.as_ref().ok_or_else(|| KdError::Missing {
            method: method.into(),
            what: "the penultimate embedding, which these outputs do not have (a teacher cache stores logits only)".into(),
        })
    }

    /// The stage output `layer` (shallow to deep) that `method`'s `hint_layer` names, or an
    /// error saying how many the `who` (student, teacher) has.
    pub fn feature(&self, layer: usize, method: &str, who: &str) -> Result<&Tensor<4>> {
        let n = self.features.len();
        self.features.get(layer).ok_or_else(|| {
            let hint = if n == 0 {
                " (a logits-only teacher cache has none; use a network teacher)".to_string()
            } else {
                format!(" (valid: 0..={}); set `hint_layer` lower", n - 1)
            };
            KdError::InvalidConfig(format!("{method}: hint_layer is {layer} but the {who} has only {n} feature maps{hint}"))
        })
    }

    /// Number of classes (the logits' second dimension).
    pub fn num_classes(&self) -> usize {
        self.logits.dims()[1]
    }

    /// A copy with every tensor detached from autodiff (for stored predictions).
    pub fn without_autodiff(&self) -> Self {
        ModelOutput {
            logits: self.logits.clone().without_autodiff(),
            features: self.features.iter().map(|f| f.clone().without_autodiff()).collect(),
            embedding: self.embedding.as_ref().map(|e| e.clone().without_autodiff()),
            preact: self.preact.as_ref().map(|p| p.map(|f| f.clone().without_autodiff(), |t| t.clone().without_autodiff())),
        }
    }
}

/// `[channels, height, width]` of a `[batch, channels, height, width]` feature map.
pub fn feature_shape(t: &Tensor<4>) -> [usize; 3] {
    let [_, c, h, w] = t.dims();
    [c, h, w]
}

/// A classifier network: the shape every student and every module-backed teacher has.
///
/// Inputs are always `[batch, channels, height, width]`; tabular data is
/// `[batch, features, 1, 1]`.
pub trait Classifier: Module + 'static {
    /// Runs the network.
    fn forward(&self, inputs: Tensor<4>) -> ModelOutput;
    /// Runs the network and also returns its pre-activation stage features and the BatchNorm
    /// before each stage's last ReLU ([`ModelOutput::preact`], which OFD reads). Default: an
    /// error, for networks that do not expose them.
    fn forward_preact(&self, inputs: Tensor<4>) -> Result<ModelOutput> {
        let _ = inputs;
        Err(KdError::InvalidConfig(format!(
            "{} does not expose pre-activation stage features and BatchNorm parameters (OFD needs them; \
             the zoo's ResNet, WRN, VGG, MobileNetV2, plain CNNs and MLP-with-BatchNorm do)",
            std::any::type_name::<Self>().rsplit("::").next().unwrap_or("this model")
        )))
    }
    /// Number of output classes.
    fn num_classes(&self) -> usize;
}

/// A trainable student: any [`Classifier`]. (A marker so that signatures say what they mean.)
pub trait Student: Classifier {}
impl<T: Classifier> Student for T {}

/// What a distiller needs from the teacher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeacherNeed {
    /// No teacher (plain training, self-distillation).
    Nothing,
    /// Logits only: a cache of soft labels can serve these.
    Logits,
    /// Logits and intermediate features (feature-based methods).
    LogitsAndFeatures,
    /// Logits, features and pre-activation features with BatchNorm parameters
    /// ([`ModelOutput::preact`], OFD). The training loop then runs the student with
    /// [`Classifier::forward_preact`] too.
    PreActivation,
}

impl TeacherNeed {
    /// What serves both needs: the larger of the two.
    pub fn union(self, other: TeacherNeed) -> TeacherNeed {
        let rank = |n: TeacherNeed| match n {
            TeacherNeed::Nothing => 0,
            TeacherNeed::Logits => 1,
            TeacherNeed::LogitsAndFeatures => 2,
            TeacherNeed::PreActivation => 3,
        };
        if rank(other) > rank(self) { other } else { self }
    }
}

/// Anything that yields teacher outputs for a batch, without gradients: a frozen network, an
/// ensemble, a cache of stored soft labels, or nothing.
pub trait Teacher {
    /// A short description for logs and result records.
    fn describe(&self) -> String;
    /// Number of classes, where known.
    fn num_classes(&self) -> Option<usize>;
    /// Teacher outputs for the batch, or `None` when `need` is [`TeacherNeed::Nothing`].
    fn outputs(&self, batch: &Batch, need: TeacherNeed) -> Result<Option<ModelOutput>>;
    /// `Some(k)` when the outputs are approximate, recovered from the top-k probabilities a
    /// cache kept; `None` (the default) when they are the teacher's exact logits. The training
    /// loop refuses approximate outputs to a method that needs exact ones.
    fn top_k(&self) -> Option<usize> {
        None
    }
}

/// A trained network used as a teacher: inference mode (BatchNorm running statistics), no autodiff.
#[derive(Debug, Clone)]
pub struct FrozenTeacher<M: Classifier> {
    model: M,
    name: String,
}

impl<M: Classifier> FrozenTeacher<M> {
    /// Freezes `model` (a copy without autodiff, in inference mode).
    pub fn new(model: M, name: impl Into<String>) -> Self {
        FrozenTeacher { model: model.valid(), name: name.into() }
    }

    /// The frozen network.
    pub fn model(&self) -> &M {
        &self.model
    }
}

impl<M: Classifier> Teacher for FrozenTeacher<M> {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.model.num_classes())
    }

    fn outputs(&self, batch: &Batch, need: TeacherNeed) -> Result<Option<ModelOutput>> {
        if need == TeacherNeed::Nothing {
            return Ok(None);
        }
        let inputs = batch.inputs.clone().without_autodiff();
        if need == TeacherNeed::PreActivation {
            return self
                .model
                .forward_preact(inputs)
                .map(Some)
                .map_err(|e| KdError::InvalidConfig(format!("teacher `{}`: {e}", self.name)));
        }
        Ok(Some(self.model.forward(inputs)))
    }
}

/// No teacher: plain training and self-distillation.
#[derive(Debug, Clone, Default)]
pub struct NoTeacher;

impl Teacher for NoTeacher {
    fn describe(&self) -> String {
        "none".into()
    }

    fn num_classes(&self) -> Option<usize> {
        None
    }

    fn outputs(&self, _batch: &Batch, need: TeacherNeed) -> Result<Option<ModelOutput>> {
        match need {
            TeacherNeed::Nothing => Ok(None),
            _ => Err(KdError::Missing { method: "this distiller".into(), what: "a teacher".into() }),
        }
    }
}
