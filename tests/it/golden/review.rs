//! ReviewKD's golden cases (tests/golden/reviewkd.json): mdistiller's `ReviewKD.forward_train`
//! (ABF fusion and `hcl_loss`) run in float64 with the case's ABF parameters; here the
//! distiller's `review` term, with weight 1 and no warm-up, from the same stage features,
//! embeddings and parameters, its gradients on the student's stages, embedding and every ABF
//! parameter.

use std::collections::BTreeMap;

use kd::core::burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use kd::core::burn::tensor::{Device, Gradients, Tensor};
use kd::core::distiller::Distiller;
use kd::core::{ModelOutput, Step, Warmup};
use kd::reviewkd::{ReviewFusion, ReviewKd, ReviewKdConfig};

use super::features::{Array, FeatureCase, Findings, embedding_grad, embedding_inputs, expected_stage_grads, stage_grads, stage_inputs};

/// The parameter paths of a module (`abfs.0.conv1.weight`), as the cases name them.
#[derive(Default)]
struct Path(Vec<String>);

impl Path {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn name(&self) -> String {
        self.0.join(".")
    }
}

/// Replaces every parameter the case lists with its value (a leaf on the autodiff device).
struct SetParts<'a> {
    path: Path,
    values: &'a BTreeMap<String, Array>,
    device: Device,
    set: Vec<String>,
    error: Option<String>,
}

impl ModuleMapper for SetParts<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.path.name();
        let Some(array) = self.values.get(&name) else { return param };
        match array.leaf::<D>(&name, &self.device) {
            Ok(value) if value.dims() == param.val().dims() => {
                self.set.push(name);
                param.map(|_| value)
            }
            Ok(value) => {
                self.error = Some(format!("learnable {name}: shape {:?}, the module's {:?}", value.dims(), param.val().dims()));
                param
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

/// Compares the gradient of every parameter the case has an expected one for.
struct CompareGrads<'a> {
    path: Path,
    expected: &'a BTreeMap<String, Array>,
    grads: &'a Gradients,
    findings: &'a mut Findings,
    seen: Vec<String>,
    error: Option<String>,
}

impl ModuleVisitor for CompareGrads<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self.path.name();
        if let Some(expected) = self.expected.get(&name) {
            if let Err(e) = self.findings.grad(&format!("gradient of {name}"), &param.val(), self.grads, expected) {
                self.error.get_or_insert(e);
            }
            self.seen.push(name);
        }
    }
}

fn arrays(parts: &Option<BTreeMap<String, super::features::Json>>, what: &str) -> Result<BTreeMap<String, Array>, String> {
    let parts = parts.as_ref().ok_or_else(|| format!("field `{what}` is missing"))?;
    parts.iter().map(|(k, v)| Ok((k.clone(), v.array(&format!("{what}.{k}"))?))).collect()
}

fn outputs(features: Vec<Tensor<4>>, embedding: Tensor<2>, labels: usize, device: &Device) -> ModelOutput {
    let b = embedding.dims()[0];
    ModelOutput::new(Tensor::zeros([b, labels], device), features, Some(embedding))
}

pub fn check(case: &FeatureCase, device: &Device) -> Result<(), String> {
    let ad = device.clone().autodiff();
    let (s_feats, t_feats) = stage_inputs(case, device)?;
    let (s_emb, t_emb) = embedding_inputs(case, device)?;
    let b = s_emb.dims()[0];
    let student = outputs(s_feats.clone(), s_emb.clone(), 3, &ad);
    let teacher = outputs(t_feats, t_emb, 3, device);
    let max_mid = case.param("MAX_MID_CHANNEL")? as usize;
    let config = ReviewKdConfig { ce_weight: 0.0, reviewkd_weight: 1.0, warmup_epochs: Warmup::Epochs(0), max_mid_channels: max_mid };
    let mut distiller = ReviewKd::new(config).map_err(|e| e.to_string())?;
    let fusion: ReviewFusion = distiller.init_aux(&student.without_autodiff(), Some(&teacher), &ad).map_err(|e| e.to_string())?;

    let values = arrays(&case.learnable, "learnable")?;
    let mut setter = SetParts { path: Path::default(), values: &values, device: device.clone(), set: Vec::new(), error: None };
    let fusion = fusion.map(&mut setter);
    if let Some(e) = setter.error {
        return Err(e);
    }
    if setter.set.len() != values.len() {
        let unused: Vec<_> = values.keys().filter(|k| !setter.set.contains(k)).collect();
        return Err(format!("learnable parts the fusion does not have: {unused:?}"));
    }

    let labels = (0..b).map(|i| i % 3).collect();
    let batch = kd_testkit::label_batch(labels, (0..b).collect(), device);
    let step = Step::new(kd_testkit::ctx(1, 1), &batch, &student, Some(&teacher)).with_aux(&fusion);
    let terms = distiller.loss(&step).map_err(|e| e.to_string())?;
    let review = terms.terms().iter().find(|(n, _)| n == "review").map(|(_, t)| t.clone()).ok_or("no review term")?;

    let mut findings = Findings::default();
    findings.loss(&review, case.loss)?;
    let grads = review.backward();
    // The stem (`features[0]`) is never read: no gradient reaches it, and the reference's is 0.
    let expected = expected_stage_grads(case, s_feats.len())?;
    stage_grads(&mut findings, &s_feats, &grads, &expected, 1.0)?;
    embedding_grad(&mut findings, case, &s_emb, &grads)?;
    let expected = arrays(&case.grad_learnable, "grad_learnable")?;
    let mut compare =
        CompareGrads { path: Path::default(), expected: &expected, grads: &grads, findings: &mut findings, seen: Vec::new(), error: None };
    fusion.visit(&mut compare);
    if let Some(e) = compare.error {
        return Err(e);
    }
    if compare.seen.len() != expected.len() {
        return Err(format!("{} learnable gradients expected, {} compared", expected.len(), compare.seen.len()));
    }
    findings.finish()
}
