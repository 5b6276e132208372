"""The base configuration every file in `configs/` starts from.

Each value that reads an ambiguity of the papers (docs/DESIGN.md) is a field here, so a user can switch to
the other reading with `--config.<path>=<value>`; every run writes the config it ran with.

Layout (all fields always present, so that overrides are type-checked by ml_collections):
  config.name, config.seed
  config.data      which corpus, where, which classes, how bad files are handled
  config.features  front end (docs/DESIGN.md §2)
  config.model     architecture (docs/DESIGN.md §3)
  config.train     optimisation, batches, folds, model selection (docs/DESIGN.md §4-5)
"""

from __future__ import annotations

import ml_collections

EMOTIONS = ("neu", "hap", "ang", "sad")
ATTITUDES = ("friendly", "distant", "dominant", "seductive")


def base_config() -> ml_collections.ConfigDict:
  """The paper's SSA-CRNN-r at full size on the built-in corpus."""
  c = ml_collections.ConfigDict()
  c.name = "ssa_crnn_r"
  c.seed = 0

  # --- data (docs/DESIGN.md §7) ---
  c.data = ml_collections.ConfigDict()
  c.data.corpus = "synthetic"  # synthetic | iemocap | atthack | manifest
  c.data.root = ""  # corpus root (iemocap / atthack) or the manifest CSV's path
  c.data.cache_dir = "~/.cache/ssa_jax"  # generated corpus and feature caches (hash-keyed)
  c.data.classes = EMOTIONS  # class names, in logit order
  c.data.scripted = False  # IEMOCAP: add scripted dialogs to the improvised ones
  c.data.merge_exc = False  # IEMOCAP: count `exc` as `hap`
  c.data.attitudes = ATTITUDES  # Att-HACK: names of a1..a4, in that order
  c.data.strict = False  # a bad file is an error instead of a reported skip
  # The built-in generated corpus (ssa_jax/corpora/synthetic.py).
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.num_speakers = 8  # any >= 1 (>= 4 with strategies=swapped); e.g. 8, 10, 20
  c.data.synthetic.num_phrases = 12
  c.data.synthetic.repetitions = 2
  c.data.synthetic.seed = 0
  # Class proportions: balanced (every (speaker, class) has num_phrases phrases) | iemocap (the
  # improvised IEMOCAP proportions neu 1099 : hap 284 : ang 289 : sad 608, by dropping whole
  # repetition groups; at least 2 phrases per (speaker, class); 4 classes only).
  c.data.synthetic.class_weights = "balanced"
  # How speakers express the classes: shared (all the same way) | per_speaker (each speaker a
  # personal mix of the prototypes) | swapped (two speaker groups, both sexes in each, that express
  # hap and ang by each other's cues) | voice_linked (as swapped, but the group follows the
  # voice: tremor rate, accent size, speaking rate, stress contrast, both sexes in each group, so
  # a speaker code can carry over to unseen speakers).
  # Exact definitions in ssa_jax/corpora/synthetic.py.
  c.data.synthetic.strategies = "per_speaker"
  # A held-out test subset of every draw (utterances marked subset="test"; `train.split=heldout`
  # trains on the rest and scores the test subset). Always class-balanced, whatever class_weights:
  #   test_phrases   extra phrases per (speaker, class) of the training speakers, held out
  #                  (new sentences of known speakers: speaker-dependent questions);
  #   test_speakers  extra speakers whose every utterance is held out (unseen-speaker questions).
  c.data.synthetic.test_phrases = 0
  c.data.synthetic.test_speakers = 0

  # --- features (docs/DESIGN.md §2) ---
  c.features = ml_collections.ConfigDict()
  c.features.sample_rate = 16000
  c.features.win_length = 400  # 25 ms Hamming window
  c.features.hop_length = 160  # 10 ms hop
  c.features.n_fft = 512
  c.features.n_mels = 40
  c.features.fmin = 0.0
  c.features.fmax = 8000.0
  c.features.log_floor = 1e-6  # log(mel_power + floor); never power_to_db's top_db clip
  c.features.delta_width = 5  # regression delta with N=2
  c.features.segment_frames = 300  # 3 s segments
  c.features.min_segment_frames = 100  # a trailing partial segment shorter than this is dropped
  c.features.backend = "jax"  # jax (batched) | librosa (per-file reference)
  c.features.norm_fallback = "self"  # unseen speaker at prediction: self | global

  # --- model (docs/DESIGN.md §3) ---
  c.model = ml_collections.ConfigDict()
  c.model.name = "ssa_crnn"  # acrnn | ssa_crnn
  c.model.conv_features = (128, 256, 256, 256, 256, 256)
  c.model.kernel_size = (5, 3)  # (time, freq)
  c.model.pool_size = (2, 2)  # after conv1; the ACRNN code uses (2, 4)
  c.model.dense_units = 768
  c.model.lstm_units = 128  # per direction
  c.model.embed_dim = 128
  c.model.num_classes = len(EMOTIONS)
  c.model.num_speakers = 0  # 0: taken from the training data
  c.model.leaky_slope = 0.01
  c.model.bn_momentum = 0.99
  c.model.mask_padding = True
  # The emotion head (docs/DESIGN.md "Eq. 8 head"): logits = s * (z W + b) (bias "scaled"),
  # s * z W + b ("unscaled") or s * z W ("none"). Eq. 8 fixes each column of W to the L1 norm
  # 1 / (K mean_i ||z_i||_1) (z >= 0), so the logits z W are bounded by about 1/K: without the
  # temperature s the softmax stays near uniform. s: a positive number, "auto" = K * embed_dim,
  # or "learned" (a trained scalar, log-parametrised, starting at logit_scale_init). Use 1 for
  # an unconstrained classifier (it learns its own scale).
  c.model.logit_scale = ml_collections.FieldReference("auto", field_type=object)
  c.model.logit_scale_init = ml_collections.FieldReference("auto", field_type=object)
  c.model.classifier_bias = "scaled"  # scaled | unscaled | none
  c.model.ssa = "full"  # SSA-CRNN ablations: full | self_only | speaker_only
  # auto (CPU: winograd, else xla) | xla (XLA's convolution) | winograd (F(4, 5) along time
  # for layers with >= 32 inputs: 0.4x the multiplications, same parameters and function;
  # ssa_jax/models/layers.py)
  c.model.conv_impl = "auto"
  # under winograd, the conv layers with at least this many input channels run Winograd (with
  # fewer, the transforms cost more than they save on CPU: 32). 1 puts every layer on Winograd,
  # e.g. to check its accuracy at quickstart size, whose layers all have < 32 inputs.
  c.model.winograd_min_channels = 32
  c.model.lstm_impl = "auto"  # auto (= hoisted) | hoisted (input projection out of the loop) | flax
  c.model.dtype = "float32"  # compute dtype of convs and matmuls: float32 | bfloat16
  # --- Beyond the paper: unseen speakers (docs/DESIGN.md "Beyond the paper"; SSA-CRNN only;
  # every value off by default, the paper's model unchanged) ---
  # The speaker branch's objective: softmax (a dense classifier on z_sp, cross-entropy over the
  # training speakers: the paper's) | aam (additive angular margin softmax, ArcFace / "Margin
  # Matters": a bias-free cosine classifier on the L2-normalised z_sp and class weights, logits
  # aam_scale * cos(theta_y + aam_margin) for the true speaker, aam_scale * cos(theta_j) for the
  # others; an open-set speaker embedding, scored by bin.speaker_eer).
  c.model.speaker_loss = "softmax"
  c.model.aam_margin = 0.2  # m, radians (speaker_loss="aam")
  c.model.aam_scale = 30.0  # s (speaker_loss="aam")
  # Probability that, in training mode, the whole speaker half of the SSA is dropped for an
  # example of the batch (a segment; alpha_sp = 0 and the speaker half of the context is 0, as
  # model.ssa="self_only"), so a speaker-free path always exists. Never in evaluation. 0: off.
  c.model.speaker_dropout = 0.0
  # How the SSA's weights are normalised: joint (the paper's Eq. 6: one softmax over both halves,
  # which compete for the mass; S4's pilot saw the speaker half's mass go from 0.006 to 0.97 with
  # the seed) | per_half (a softmax within each half, each half weighted 1/2: neither half can
  # starve the other; models/attention.ssa_weights).
  c.model.ssa_softmax = "joint"
  # Enrollment: k > 0 gives the speaker half of the SSA, besides the utterance's own speaker
  # frames, k more keys/values: the pooled speaker-branch states (C_sp's BLSTM states pooled by
  # its own self attention, Eq. 1-2: c_sp in R^d) of k OTHER utterances of the same speaker.
  # Training: for each segment of a batch, one random segment of each of k distinct other
  # training utterances of its speaker (never its own utterance), seeded by (seed, fold, epoch,
  # batch). Evaluation: a speaker with training utterances is enrolled with k of them (every
  # evaluated utterance scored); a speaker without (unseen) with k of its own utterances in the
  # evaluated set, which are then never scored (docs/DESIGN.md "Beyond the paper", enrollment).
  # `bin.predict --enroll FILE ...` supplies them at prediction. 0: off (the paper's model).
  c.model.enroll_k = 0

  # --- training (docs/DESIGN.md §4-5) ---
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 40  # global; emotion-balanced (batch_size / num_classes per class)
  c.train.eval_batch_size = 40
  c.train.learning_rate = 1e-4
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.eps = 1e-8
  c.train.constraint = "l1_sphere"  # l1_sphere | rescale | none (Eq. 8)
  # The step size the Eq. 8 head sees (docs/DESIGN.md "Eq. 8 head"): "adam" (the optimizer's
  # update as for every other parameter) | "relative" (the classifier kernel's update scaled by
  # its column's L1 norm / sqrt(embed_dim), and a scaled bias's by 1 / logit_scale, so that each
  # column moves relative to its size as an unconstrained lecun-normal column does; the initial
  # kernel is put on the sphere by rescaling, densely, instead of the sparse L1 projection).
  c.train.head_step = "adam"
  # How training batches are drawn: balanced (batch_size / K segments of every class, the
  # paper's) | proportional (a seeded shuffle of the training segments: corpus proportions).
  c.train.batch_sampling = "balanced"
  # Evaluation weights (beyond the paper; docs/DESIGN.md "Weight averaging"): 0 (off, the paper's:
  # every evaluation, selection and checkpoint scores the live weights) | d in (0, 1): an
  # exponential moving average of params and batch_stats, ema <- decay_t * ema + (1 - decay_t) *
  # live after every step, decay_t = min(d, (1 + t) / (10 + t)) at step t (TensorFlow's
  # ExponentialMovingAverage with num_updates), is what every evaluation, the selection and
  # every use of a checkpoint (evaluate, predict, export) scores. Training uses the live weights.
  c.train.ema_decay = 0.0
  c.train.speaker_loss_weight = 1.0  # SSA-CRNN: loss = CE_em + w * CE_sp (the paper: 1)
  # --- Beyond the paper: unseen speakers (docs/DESIGN.md "Beyond the paper"; off by default) ---
  # SSA-CRNN: no gradient from the emotion loss into the speaker branch (the SSA reads the speaker
  # frames h_sp through a stop-gradient); the speaker branch is trained by CE_sp alone.
  c.train.speaker_stop_gradient = False
  # lambda >= 0 of an adversarial speaker classifier on z_em (a linear layer, its parameters
  # params["speaker_adversary"], trained with CE over the training speakers and added to the
  # loss), whose gradient into z_em is multiplied by -lambda (gradient reversal, Ganin et al.,
  # JMLR 2016): z_em is pushed to carry no speaker identity. 0: no adversary. Any model.
  c.train.adversarial_weight = 0.0
  c.train.epochs = 100
  c.train.patience = 20  # epochs without a better validation UAR before stopping; 0: never
  # random (IEMOCAP) | linguistic (Att-HACK) | loso | heldout (train on subset "train", score
  # subset "test": the replicate protocol's draws, or a manifest with a subset column)
  c.train.split = "random"
  c.train.num_folds = 10
  c.train.valid_fraction = 0.2  # random split
  # Model selection: valid (the best epoch on the fold's validation set, the paper's) | inner
  # (the best epoch on an inner validation split carved from the training part, `inner_fraction`
  # of its repetition groups, stratified as the random split; the fold's validation set is
  # scored once, at the selected epoch).
  c.train.selection = "valid"
  c.train.inner_fraction = 0.2
  # Score a run without enrollment (model.enroll_k = 0, or ACRNN) on the subset a
  # model.enroll_k = K run scores: the K utterances of each unseen speaker that such a run
  # would enroll (the same seeded choice) are left out of the scored validation / test set
  # (result.json "scored"), so that paired comparisons score the same utterances. With
  # model.enroll_k > 0: 0 or the same K. 0: every evaluated utterance is scored.
  c.train.exclude_enroll_k = 0
  c.train.pooling = "max"  # segment posteriors -> utterance: max | mean
  c.train.log_every = 10  # steps between progress-bar updates
  # Mid-epoch checkpoints (preemption): the train state, the exact data position (epoch, batch)
  # and the epoch's running metric sums, so that a killed run resumes at that batch and ends with
  # the same result.json. Every epoch end is checkpointed regardless. <= 0: no timed checkpoint.
  # The clock is read at log steps (log_every), so the interval is rounded up to one.
  c.train.checkpoint_every_minutes = 10.0
  c.train.checkpoint_every_steps = 0  # also every this many steps (tests); 0: off
  return c
