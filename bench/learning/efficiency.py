"""Label efficiency: labels needed to reach 95% of full-data macro-F1, random vs active sampling.

Embeds each real sample set in ../shared/data (cached in var/bench/learning/emb_<name>.npy),
replays active learning with simulated raters who give the true label, and prints, per data set
and on average over seeds, how many labels each strategy needs to first reach 95% of the
full-data macro-F1 (each replay stops there; a seed that never does counts as the whole pool),
with a 95% bootstrap interval over seeds for the change against random.
Every seed has its own group-wise split into pool and test set, and its own full-data reference.
Strategies come from labelling/learning/sampling.py, the functions the product's queue uses:
random; entropy, margin, least_confidence (most uncertain first); hybrid (entropy x density,
one per k-means cluster of the 3x most uncertain); badge (k-means++ over gradient embeddings
scaled by density**0.5, sampling.badge_priorities); badge_alfamix (the product's default:
badge until 40 labels, alfamix_after=, then ALFA-Mix, sampling.alfamix_priorities, until 150,
margin_after= (0: never), then the smallest margin first, sampling.margin_priorities; in the
ALFA-Mix part a batch is badge's when more than most_flips=, 0.8, of the items flip); and, for
experiments, alfamix alone (alfa=: the class mean's share, 0.5), badge_density, badge_balanced,
badge_top, badge_local, density, coreset, balanced, diverse, typiclust, typiclust_unc.
The models read the features projected on the items' 128 strongest directions, as the
product's (--dimensions 0: all of them).
Model strategies start from the items nearest to k-means centres, one batch of them
(--cold kmeans; or kmeans_pp, clusters = the old round-robin order, random).
Variants by "strategy,option=value": e.g. badge,density=0 is plain BADGE; near=0 turns off
badge's rule that near copies of labelled replies come last (near=0.9: looser copies);
siblings=auto (the product's rule: prompt-mates served together while labelled ones disagree
more than chance, else spread over prompts), pair (never spread), on (always pair) or off;
until=N: TypiClust batches until N labels, then the strategy.

    .venv/bin/python bench/learning/efficiency.py                  # a table as below (~20 min)
    .venv/bin/python bench/learning/efficiency.py --seeds 5 --sets bbq
    .venv/bin/python bench/learning/efficiency.py --max-items 1500 --test-share 0.2 --batch 20 \
        --seeds 5                                                   # the earlier configuration
    .venv/bin/python bench/learning/efficiency.py --embed-only     # just build the caches
    .venv/bin/python bench/learning/diagnose.py                    # chance level, C, noise

Why the configuration changed (bench/learning/diagnose.py, 2026-11-23). With 1,500 items per
set and 20% of them as test set (~300 items), a test macro-F1 is +-0.03 by chance alone, while
the target (95% of full-data) sits only 0.03 below the plateau, and on toldbr and hh_pairs only
0.02-0.03 above chance (full-data macro-F1 0.56 against 0.50 for guessing by class frequency):
the first crossing was mostly noise, per-seed values ranged 10-1,100 and 5 seeds said nothing.
hh_pairs' label is which of two replies people preferred, a relative judgement that a per-item
classifier barely sees (0.56); it stays in the table but measures little. Changes: all items
of each set (up to 3,011), half of them as test set (600-1,500 items, +-0.015), batch 10
instead of 20 (the target is reached after 30-160 random labels, so 20 was too coarse), 50
seeds. The metric is unchanged: labels to first reach 95% of full-data macro-F1. C=0.1 stays:
it was best or level with 0.01-10 on every set; sets' macro-F1 at full data: truthfulqa 0.62,
bbq 0.67, toldbr 0.56, hh_pairs 0.56.

Measured 2026-12-08, the same configuration, bf16 vectors of this machine (random's row moved
again), by this script, --seeds 200, with the models reading the features projected on the
items' 128 strongest directions (classifiers.FEATURE_DIMENSIONS, --dimensions; the product's
default since this run):

    strategy                  truthfulqa   bbq        toldbr      hh_pairs    mean   worst
    random                    142          44         124         90
    badge_alfamix (default)   101 +29%     25 +43%     76 +39%    63 +30%     +35%   +29%
    all 1,536 features (--dimensions 0), the same seeds and vectors:
    random                    153          39         138         107
    badge_alfamix             104 +32%     37 +5%      83 +40%    72 +33%     +28%   +5%

95% intervals for the default: +17..+39%, +32..+53%, +26..+49%, +19..+40%. Full-data
macro-F1 0.617 0.667 0.562 0.557 against 0.618 0.666 0.569 0.562 on all features. Goal met.
The projection (classifiers.projection): the top right singular vectors of all the set's
items' pair features, uncentred (truncated SVD; labels unused, as a run finds them from the
project's items), so cosines, badge's density and C keep their meaning; near copies are still
told by the replies' own vectors. With 30-150 labels a logistic model over 1,536 features
fits the directions where items barely vary as readily as those that tell them apart, and
the queue reads that noise as doubt. Screened with a scratch script calling simulate() seed
by seed on seeds 0-99 (these vectors: random 143 41 141 98, badge_alfamix 99 39 83 68, +27%):
64 directions 100 19 50 47 (random 132 31 90 79; +37%, but full-data macro-F1 up to 0.015
lower), 128 85 22 76 59 (random 132 42 132 83; +38%), 256 99 33 88 85 (+24%); then 128 on
fresh seeds 100-199: 115 25 77 70 against random's 152 45 115 97 (+32%; all features there
+28%). Principal components instead (centred, rescaled to unit mean square length, which also
flattens badge's density, the cosine to the pool's mean): 64 +28%, 128 +34% (100-199: +34%),
256 +31%, 512 worse, 1,536 (a rescaling only) -10% on truthfulqa. Against the old target,
95% of the 1,536-feature model's full-data macro-F1 (seeds 0-199), the default needs 105 24
92 77 labels, against 104 37 83 72 for the same order on all features and random's 153 39
138 107 there (+33% on average): bbq gains most, toldbr and hh_pairs, whose reduced models
level off 0.005-0.007 lower, give back a few labels.
Also tried on seeds 0-99 and dropped (experiments not kept in the code): CAL (contrastive
active learning, Margatina et al. 2021: the mean KL divergence between an item's predicted
probabilities and those of its 10 nearest labelled items) instead of ALFA-Mix from 40 to 150
labels, 144 53 149 70 (-2%), or instead of margin from 150, 115 38 88 68 (+24%).

Measured 2026-12-07 (evening), the same configuration, on a machine whose encoder runs in bf16
(random's row moved again), by this script, --seeds 200:

    strategy                  truthfulqa   bbq        toldbr      hh_pairs    mean   worst
    random                    150          39         135         109
    badge_alfamix (default)   108 +28%     36 +8%      87 +36%    70 +36%     +27%   +8%
    badge_alfamix,most_flips=1  102 +33%   41 -4%      86 +36%    76 +31%     +24%   -4%

95% intervals for the default: +18..+37%, -10..+23%, +25..+45%, +27..+44%. The flip rule
(sampling.flips_single_out: in the ALFA-Mix part, a batch is badge's when more than 80% of the
items still to label flip) was screened on seeds 0-99 with a scratch script calling simulate()
seed by seed: at most 75% / 80% / 85% flipping +23% +15% +33% +32% (26%) / +25% +16% +36% +31%
(27%) / +27% +11% +35% +28% (25%), against +30% +8% +35% +22% (24%) without; then on fresh seeds
100-199: +31% -1% +35% +40% (26%) against +35% -17% +37% +38% (23%). Flip shares, seeds 0-2,
one per ALFA-Mix batch from 40 to 140 labels: bbq 0.78-0.85 throughout (mixing with the mean of
"unknown", a class far from the other two, flips nearly every other item); toldbr 0.67-0.81
falling to 0.25-0.46; truthfulqa 0.67-0.82 falling to 0.50-0.60; hh_pairs 0.89-0.98 falling to
0.64-0.72. bbq's worst seeds without the rule were 122 and 153 (490 and 450 labels, random 60
and 20). On seed 122 ALFA-Mix's picks left "unknown" with 10 of 200 labels; at 200 the model
called 827 test items biased and 141 counter_biased (the truth: 555 and 418), counter_biased's
F1 was 0.18, and the macro-F1 stayed between 0.60 and 0.65 until 480 labels (target 0.653).
Also tried on the same seeds and dropped (experiments not kept in the code): ALFA-Mix started
after 20 or 30 labels with the rule (truthfulqa 110 and 106 against 106, toldbr 83 and 83
against 85); BALD (mutual information of 8 bootstrapped models) as the third part (truthfulqa
+16%, bbq +10%, toldbr +35%) or as the second (bbq -104%); training weights correcting the
picks' skew (k-means regions of the pool over those of the labelled items: bbq -8%, with random
-11% under the same weights); badge instead of ALFA-Mix while labelled prompt-mates disagree
(hh_pairs +39%, otherwise what the flip rule gives).
Tried 2026-12-07 (night) on seeds 0-99 (this configuration; badge_alfamix there 106 34 85 68,
+27%) and dropped, experiments not kept in the code: ALFA-Mix's k-means with 1 centre per
batch instead of 3 (115 35 89 70, +24%), 2 (truthfulqa 102, bbq 34, hh_pairs 70) or 5
(truthfulqa 103, toldbr 86, hh_pairs 69); its centres served largest cluster first (104 35 79
69, +28%: noise); no margin part, or margin from 300 labels (+27% both; truthfulqa 111, 110);
margin from 100 labels (114 34 89 73, +24%); badge instead of margin from 150 (122 34 83 68,
+25%): the margin part shortens truthfulqa's tails.
Where the savings come from, on those seeds: the medians differ little (truthfulqa 90 against
random's 105, bbq 30 and 30, toldbr 70 and 80, hh_pairs 60 and 80); the means differ mostly
by random's long tails: seeds needing more than 200 labels add 73, 70 and 35 labels to
random's means on truthfulqa, toldbr and hh_pairs, and 23, 13 and 6 to badge_alfamix's.
badge_alfamix's own tails look like truthfulqa seed 72 (370 labels, random 70): its picks had
random's class shares (41 and 42 "false" of 100), but the model trained on them stayed 0.03-0.06
below random's from 40 to 300 labels (0.543 against 0.586 at 100): the picks teach the model
less about the test set than random ones, not fewer of a class, so the next ingredient has to
correct what the picks cover, which none of the switches above does. A first try at that,
ALFA-Mix's flips narrowed to the k-means regions (20, over reply vectors) holding a smaller
share of the labels than of the pool, was worse: 117 34 94 71 (+23%) on seeds 0-99.
Tried 2026-12-08 on seeds 0-99 (the same vectors: random 141 41 133 100 and badge_alfamix 106
34 85 68 came out exactly as before) and dropped, experiments not kept in the code:
- Retraining every 5 labels (batch 5, both orders, so both are scored every 5 labels): random
  132 31 115 80, badge_alfamix 98 27 81 54 (+26% +12% +29% +32%, mean 25%). A finer grid gives
  a noisy curve more chances to cross the target early, and random's curve is the noisier, so
  it gains more; retrain_every stays 10.
- The queue reading a model fitted at another C, the product's model (C=0.1) scored: C=0.3
  88 44 97 63 (+24%), C=1 100 37 94 73 (+24%). Training and scoring at that C too (the
  target still 95% of the C=0.1 full-data model): 0.3 85 44 97 68, random 120 38 126 104;
  1 96 36 101 74; 0.05 100 39 95 62, random 157 41 159 101. truthfulqa and hh_pairs like a
  sharper queue, bbq and toldbr (noisier labels near the boundary) do not; no C helps the
  mean, and C=0.05's better ratio (30%) comes only from making random slower.
- Self-training (each fit adds the 50 most confident pool items per predicted class as
  pseudo-labels, half the labels' weight; hh_pairs not run): random 218 35 441, badge_alfamix
  160 30 284: the pseudo-labels hold models below the target at a few hundred labels.
- The first 30 or 40 labels all from the cold start's k-means (the items nearest 30 or 40
  centres, 10 per batch) instead of 10 and then badge: 104 45 77 64 (+23%) and 101 46 81 72
  (+20%). toldbr gains, bbq loses: on seeds 0-19 at 30 labels the centres covered more
  templates (20 groups against 15) but were 53% "biased" (random's picks 42%, badge's 45%)
  and reached 0.932 of the full-data macro-F1 against badge's 0.955 and random's 0.947.
  Those centres served round-robin by predicted class (30 labels from 60 centres; seeds 0-19)
  were no better on bbq: 0.921, 20% "counter_biased".
- The first 40 labels at random (the cold start's batch too), then ALFA-Mix and margin as
  now: 107 38 96 71 (+22%). The cold start and badge's picks are level with random ones at
  30 labels (below) but leave the later parts better placed, toldbr most (85 against 96).
- Badge's density power 1 instead of 0.5 (it orders the first 40 labels and ALFA-Mix's
  fallback batches): 105 36 79 64 (+28%) on seeds 0-99, then on fresh seeds 100-199 113 39
  92 81 (+22%) against the default's 110 38 88 72 (+26%; random 160 37 136 119); 0.25: 111
  32 90 69 (+27%, seeds 0-99). 0.5 stays. Over seeds 0-199 the default is 108 36 87 70
  against random's 150 39 135 109 (+27%), as in the table above.
Mean curves (seeds 0-39, share of the full-data macro-F1, and the share of seeds at or above
95%) show where the saving is made: up to 50 labels the two orders are level (toldbr at 30
labels 0.874 against random's 0.880, hh_pairs 0.888 and 0.894, truthfulqa 0.882 and 0.860, bbq
0.949 and 0.953), after that the active order pulls ahead (at 190 labels toldbr 0.980 against
0.950, 90% of seeds at the target against 53%; truthfulqa 0.980 against 0.955, 80% against
53%). Random's curve hovers at the target from about 100 labels, so its first crossing is
often luck; what remains to win is the first 50 labels, where no order tried beats chance on
the curve itself.

The replay's models are uncalibrated (calibration's folds would triple its time). The
product's are sigmoid-calibrated, but since 2026-12-07 (night) they decide, and their queue
reads probabilities, as the class-balanced fit inside them (classifiers.predict and
balanced_proba), which below 5,000 labels is exactly the replay's model: the savings here are
the product's. Before that, the product's argmax of calibrated probabilities cost full-data
macro-F1 0.56-0.58 -> 0.45-0.48 on toldbr and 0.53-0.57 -> 0.41-0.45 on hh_pairs, and a
replay with calibrated models (an option then, calibrate=1; seeds 0-99) gave random 180 71 18
15 against badge_alfamix 174 65 10 16.

Measured 2026-12-07, the same configuration, int8 vectors (random's figures identical to the
2026-12-03 afternoon and evening runs below), 200 seeds; simulate() was called seed by seed
from a scratch script that kept each seed's count, so runs could be split and resumed:

    strategy                  truthfulqa   bbq        toldbr      hh_pairs    mean   worst
    random                    148          45         137         103
    badge_alfamix (default)   104 +30%     41 +7%      86 +37%    73 +29%     +26%   +7%
    seeds 0-99: random        142          43         135         95
    badge_alfamix              86 +39%     45 -4%      80 +41%    64 +32%     +27%   -4%
    margin_after=0             97 +32%     52 -19%     80 +41%    62 +35%     +22%   -19%
    margin_after=100           94 +41%*    51 -18%     84 +38%    61 +35%
    margin_after=200                       54 -25%
    * truthfulqa after 100 labels: 34 seeds only (random 159, margin_after=150 86 on them).

95% intervals for badge_alfamix over 200 seeds: +19..+39%, -14..+25%, +26..+46%, +17..+39%;
seeds 100-199 (fresh, after the switch was chosen on 0-99): +21% +18% +34% +26%. The third
part (margin_after=150, the smallest margin first) took bbq's worst seeds under two-part
badge_alfamix (5 and 6: 570 and 670 labels, random 460 and 210) to 390 and 250. Its switch
point is noise on bbq (-18%, -4%, -25% after 100, 150, 200 labels, the same seeds); 150 was
the best screened and held on fresh seeds. The two-part order over these 200 seeds, measured
2026-12-03 on the same vectors: truthfulqa 114 (+23%), bbq 45 (0%), hh_pairs 70 (+32%);
badge 144 (+3%), 38 (+14%), 64 (+38%).
Variants of the margin part tried on seeds 0-99 (experiments not kept in the code), against
its +39% -4% +41% +32% (mean 27%): margin x density**0.5 +37% -8% +41% +36% (26%); near
copies of labelled replies last, as in badge, +32% -5% (96 seeds) and hh_pairs +32%;
cluster-margin (Citovsky et al. 2021: k-means over the 3 x batch smallest margins, the
smallest of each cluster) +39% -1% +40% +33% (28%), level within the noise, so the plain
margin stays.

Measured 2026-12-03 (late), the same configuration, 200 seeds, on a machine whose encoder runs
in bf16 (so random's row moved again):

    strategy                  truthfulqa   bbq        toldbr      hh_pairs    mean   worst
    random                    153          39         138         107
    badge_alfamix (default)   108 +30%     41 -6%      81 +42%    77 +28%     +24%   -6%
    badge                     147 +4%      38 +3%     120 +14%    72 +33%     +13%   +3%

95% intervals for badge_alfamix: +17..+40%, -35..+15%, +33..+49%, +18..+38%. badge_alfamix:
badge until 40 labels, then ALFA-Mix (k-means, 3 centres per batch, over the items that flip).
The switch was screened on seeds 0-99 (after 20/30/40/50/80 labels: mean +21/+23/+27/+24/+24%;
bbq -9/+3/+7/+7/+6%) and measured again on seeds 100-199: +30% -20% +40% +27% (badge +5% +9%
+11% +35%). bbq's -6% is one seed (137: 770 labels against badge's 60, random's 30); without
it +3%. On bbq the model barely tells biased from counter-biased answers (per-class F1
0.4-0.6; "unknown" 0.97), so its macro-F1 swings with how it splits those two and the first
crossing of the target is mostly noise. Also tried on seeds 0-99 and dropped: 2 of every 10
picks at random (badge_alfamix,random=0.2: +28% there, then +16% on seeds 100-199, bbq -25%);
ALFA-Mix and badge in alternate batches after the switch (+21%); 3 of 10 at random (truthfulqa
+36%, toldbr +37%, hh_pairs +23%: no better); a class mean's share of 0.35 or 0.7 instead of
0.5 after the switch (+19% +4% +31% +25%, mean 20%; +18% +6% +46% +38%, mean 27%, level
with 0.5's 27% on those seeds).

Measured 2026-12-03 (night), the same configuration, on another machine of the same kind
(Xeon with AVX-512 VNNI): the int8 encoder's vectors differ slightly by CPU, so random's row
moved too (151 44 142 102 against 142 43 135 95) and only rows of one run compare:

    strategy                  truthfulqa   bbq        toldbr      hh_pairs    mean   worst
    random                    151          44         142         102
    badge (the default)       119 +21%     36 +19%    114 +20%    63 +38%     +25%   +19%
    alfamix                    98 +35%     51 -15%     80 +44%    73 +28%     +23%   -15%
    alfamix,siblings=pair     123 +18%     42 +5%      81 +43%    76 +26%     +23%   +5%

95% bootstrap intervals: badge +1..+37%, -6..+37%, -4..+38%, +24..+48%; alfamix +19..+48%,
-49..+11%, +28..+55%, +11..+42%. Halves (seeds 0-49 / 50-99): badge +31/+8, +30/+2, +7/+31,
+44/+31; alfamix +41/+27, -0/-38, +38/+49, +36/+20.
ALFA-Mix (Parvaneh et al. 2022; sampling.alfamix_batch): k-means over the items whose
predicted class changes when their features are mixed halfway with a labelled class's mean,
the item nearest each centre, near copies of labelled replies only to fill. It is the first
order to beat badge clearly on two sets, in both halves of the seeds (toldbr, truthfulqa), and
loses clearly on bbq, where random needs only ~30 labels (median); its mean is level with
badge's, so badge stays the default. A smaller share of the class mean (alfa=, more
uncertainty, fewer typical items) was worse on seeds 0-49: 0.1 and 0.2 (before the near-copy
rule) truthfulqa +3% and +10%, bbq -63% and -86%; 0.3 (with it) +18% and -55%. With 1.0
(k-means over the whole pool each batch, no rule) bbq fell to -80%. Without the near-copy
rule bbq was -32% on seeds 0-49 (0% with it): picks repeated the short replies ("The Jewish
man") that badge's rule holds back. siblings=off (k-means over one batch, no spreading over
prompts or pairing) gave +29% +5% +43% +7% over 100 seeds (mean 21%; hh_pairs loses its pairs).
k-means over badge's gradient embeddings (x density**0.5) instead of the items' vectors: truthfulqa
+22%, bbq -16% (100 seeds; an experiment not kept in the code).
Mixing the two orders (30/50/70% of each batch from ALFA-Mix, the rest badge's; an
experiment not kept in the code) gave +26%, +19% and about +25% on average over 100 seeds,
truthfulqa +11%, +5% and +18%: no better than badge alone, within the noise of +-15% per set.

Measured 2026-12-03 (evening), the same configuration, after badge began serving near copies
of labelled replies last (sampling.near_copies: reply cosine >= 0.95, "I have no comment."
under many questions; truthfulqa: 98% of such reply pairs share their label, against 52% of
any two items). Random's figures are identical to the run below (same vectors, same seeds):

    strategy                  truthfulqa   bbq        toldbr      hh_pairs    mean   worst
    random                    142          43         135         95
    badge (near copies last)  121 +14%     38 +12%    111 +17%    58 +39%     +21%   +12%

95% bootstrap intervals: truthfulqa -7..+32%, bbq -13..+29%, toldbr -3..+34%, hh_pairs
+26..+49%. Seeds 0-49: +41 +17 -11 +37 (mean 21%); seeds 50-99: -16 +3 +38 +40 (16%).
Screened on truthfulqa (a variant that zeroed the copies' gradients): seeds 0-29 126 -> 104,
fresh seeds 30-79 117 -> 111 labels; the rule as built gave 99 and 114 on those seeds but 173
on seeds 80-99 (badge before it: about 113), so over 100 seeds truthfulqa is level (121
against 119). toldbr has 6 rows with a near copy and moved from 114 to 111, bbq from 42 to
38: a change to a few picks sends a replay down another path, and moves a set's mean by
about as much as these gains. Cosine 0.90 instead of 0.95 was worse on truthfulqa (seeds
0-79: 123 against 109). Kept: the mean rose from 18% to 21% and no set got worse by more than
the noise, and raters no longer see the tenth copy of a reply already labelled.

Measured 2026-12-03 (afternoon), int8 vectors (a text shared by items now encoded once per
chunk), 100 seeds (0-99), batch 10, all items, half as test set. Mean labels to 95% of
full-data macro-F1 (saving against random):

    strategy                  truthfulqa   bbq        toldbr      hh_pairs    mean   worst
    random                    142          43         135         95
    badge (siblings=auto)     119 +16%     42 +2%     114 +15%    59 +37%     +18%   +2%
    badge,siblings=pair       129 +9%      42 +2%     114 +15%    59 +37%     +16%   +2%
    badge,siblings=off        127 +10%     42 +2%     114 +15%    77 +18%     +12%   +2%

95% bootstrap intervals for badge: truthfulqa -5..+32%, bbq -37..+29%, toldbr -6..+32%,
hh_pairs +25..+47%. Seeds 0-49: +24 +9 -13 +35 (mean 14%); seeds 50-99: +7 -9 +36 +40 (18%).
"auto" pairs until 3 labelled prompt-mate pairs (sampling.SIBLING_EVIDENCE); with 1, as first
measured, truthfulqa was 118 (+17%), the rest the same.
Prompt-mates (sampling.pair_siblings): hh_pairs' items are the two replies to one prompt and
its label is which one people preferred; served side by side they took badge from -19% to -54%
labels on seeds 10-49 (screened there, then confirmed on 50-99: -11% to -40%). Always pairing
cost truthfulqa (several answers per question, the question decides much of the label: 30% of
labelled prompt-mates differ against 48% of any two items) 21% -> 7% on seeds 10-49; "auto"
pairs only while prompt-mates disagree more than chance, and kept 21% there ("pair" now).
Spreading instead when they agree (sampling.spread_siblings: the first picks skip prompts that
already have a label, and each other's prompts) took truthfulqa from +23% to +26% on seeds
0-49 and from -6% to +7% on seeds 50-99; it is the "auto" rule now.
TypiClust (sampling.typiclust_batch, Hacohen et al. 2022: most typical item of the largest
uncovered k-means cluster), screened on seeds 0-9: alone 5% (-85% on hh_pairs); as the cold
start -31% on toldbr; until=20 or 40 then badge helped toldbr on seeds 10-29 (+15%, +23%
against badge's -7%) but on seeds 50-99 gave bbq -36%, truthfulqa +10%, toldbr +35%, hh_pairs
+38% (mean 12%, against badge's 15% on the same seeds). Not adopted.

Measured 2026-12-03 (morning), on a machine without bf16 (int8 vectors, cosine 0.993 to fp32),
through the product's code (item_embedding_texts, encode_items, classifiers.model_inputs;
toldbr now gets pair features too, with its constant prompt), 50 seeds, batch 10, all items,
half as test set. Mean labels to 95% of full-data macro-F1 (saving against random):

    texts     strategy   truthfulqa   bbq         toldbr      hh_pairs    mean   worst
    pair      random     167          60          109         107
    pair      badge      128 +23%     53 +12%     127 -16%    85 +20%     +10%   -16%
    pair      entropy    183 -9%      113 -88%    149 -36%    158 -49%    -46%   -88%
    one text  random     142          219         66          118
    one text  badge      107 +25%     241 -10%    75 -13%     105 +11%    +3%    -13%
    reply     random, badge on toldbr only: 121, 98 (+19%; medians 50 and 65)

Full-data macro-F1, pair / one text: 0.615 / 0.590, 0.669 / 0.392, 0.570 / 0.552,
0.561 / 0.544. The same configuration on bf16 vectors (below) gave badge +22%: the saving moves
by more than 10 points with a 0.007 change of cosine, which says how much of it is noise.

Measured 2026-11-23 (packaged MiniLM, pair features [p, r, p*r, |p-r|] for the sets with a
prompt, batch 10, 50 seeds, all items, half as test set; load average 2-5 from another agent's
benchmarks on the 2 cores: wall times noisy, label counts not). Mean labels to 95% of
full-data macro-F1, and the saving against random (truthfulqa, bbq, toldbr, hh_pairs):

    strategy         truthfulqa   bbq   toldbr  hh_pairs   mean saving  worst set
    random              157        47     125     105
    entropy (old       161 -3%    86 -85% 123 +2% 182 -74%     -40%        -85%
     default)
    margin             159 -1%    92 -98% 114 +9% 181 -73%     -41%        -98%
    hybrid             210 -34%   56 -21%  42 +66% 100 +4%      +4%        -34%
    badge, density=0   113 +28%   47 +0%  106 +15%  93 +11%    +14%         +0%
    badge (density^0.5) 133 +15%  36 +23%  86 +31%  84 +20%    +22%        +15%

Goal (>= 30% fewer on average, never more than 5% worse on any set): missed; badge comes
closest and was never worse than random on any set. With 50 seeds a per-set saving is still
only known to about +-25% (bootstrap 95% intervals for badge: truthfulqa -16..+38%, bbq
-14..+44%, toldbr -9..+58%, hh_pairs -1..+37%). Selection was honest: variants were screened on
seeds 0-19 and the two best re-measured on fresh seeds 20-49 (badge,density=0.5: 29% then 25%;
plain BADGE from a k-means++ start: 24% then 23%), so the 50-seed table above is mildly
optimistic for badge at most.

Everything tried (seeds 0-19, same configuration; mean saving, worst set): entropy/margin
-19% to -58%, -84% to -128%; balanced over predicted classes -42%, -130%; core-set in 3x
candidates -36%, -142%; information density (entropy x density) 19%, -8% (25%, -32% from a
k-means++ start); hybrid 22-27%, -26% (density helps toldbr by 65-70% but hybrid gets stuck on
truthfulqa: some seeds need 550-800 labels); BADGE from k-means centres 10%, -12%; from a
k-means++ start 24%, 8%; from a random start -2%, -28%; badge x density**w: w=0.5 29%, 23%;
w=1 22%, -2%; w=2 25%, 10%; with 30% of each batch random 24%, 11%; class-weighted gradients
8%, -30%; BADGE inside the top 3-30x candidates 5-22%, -47% to 9%; badge from the old
round-robin cold start 33%, 4% on seeds 0-19 but 5%, -38% on seeds 20-49 (noise); badge with
local density (similarity to the own k-means cluster's centre, badge_local) w=0.5 23%, 10%;
w=1 28%, -5%, against 28%, 8% for badge on the same seeds.

Other configurations (the badge default; mean saving, worst set, per set):
- 1,500 items, 20% test, batch 20, 5 seeds (the earlier setup): badge 23%, -22% (43% 17% 55%
  -22%); entropy -60%, -130%; hybrid -50%, -108%.
- 1,500 items, 20% test, batch 10, 20 seeds: badge -4%, -37% (2% -37% 39% -21%); entropy -81%;
  hybrid -48%. On ~300 test items the crossing is mostly noise (random "reaches" bbq after 10-20
  labels in most seeds), so no strategy can show much.
- all items, half test, batch 50 (the product's default retrain_every), 20 seeds: badge -19%,
  entropy -17%: random reaches the target after 1-3 batches of 50, before any model can help.
  Active ordering only pays when a project retrains every ~10 labels early on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Small fits on one BLAS thread: two OpenBLAS threads spinning on a busy 2-core machine made
# each fit up to 40x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


DATA = ROOT.parent / "shared" / "data"
# name: (file, label key); toldbr's prompt is always "Escreva um tweet."
SETS: dict[str, tuple[str, str]] = {
    "truthfulqa": ("truthfulqa_llm_answers.jsonl", "truthfulness"),
    "bbq": ("bbq_bias_sample.jsonl", "answer_bias"),
    "toldbr": ("toldbr_pt_sample.jsonl", "toxic_majority"),
    "hh_pairs": ("hh_harmless_pairs_sample.jsonl", "preferred"),
}
CACHE_DIR = ROOT / "var" / "bench" / "learning"  # embeddings, so reruns skip the encoder
MAX_ITEMS = 4000  # every row of every set (the biggest has 3,011)
TARGET_SHARE = 0.95


def load(name: str, max_items: int = MAX_ITEMS) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Up to max_items rows of one set, whole groups only, chosen by a fixed seed."""
    file, key = SETS[name]
    rows = [json.loads(line) for line in (DATA / file).open(encoding="utf-8") if line.strip()]
    rows = [row for row in rows if row["labels"].get(key) is not None]
    groups = sorted({row["meta"]["group"] for row in rows})
    rng = np.random.default_rng(0)
    order = rng.permutation(len(groups))
    by_group: dict[str, list[dict]] = {}
    for row in rows:
        by_group.setdefault(row["meta"]["group"], []).append(row)
    chosen: list[dict] = []
    for index in order:
        if len(chosen) >= max_items:
            break
        chosen.extend(by_group[groups[index]])
    labels = np.array([str(row["labels"][key]) for row in chosen])
    group_ids = np.array([row["meta"]["group"] for row in chosen])
    return chosen, labels, group_ids


# --texts: the project's embedding_text whose vectors the replay reads.
TEXTS = {"pair": "pair", "product": "prompt_reply", "reply": "last_reply"}


def embed(name: str, rows: list[dict], max_items: int = MAX_ITEMS, texts: str = "pair"):
    """The vectors a project would store for these rows, made by the product's own code
    (item_embedding_texts, encode_items, the default encoder), cached per set, texts and
    encoder in var/bench/learning/."""
    from labelling.learning.encoders import encode_items, encoder_from_settings
    from labelling.learning.texts import item_embedding_texts

    mode = TEXTS[texts]
    encoder = encoder_from_settings("minilm")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    suffix = "" if max_items == MAX_ITEMS else f"_{max_items}"
    cache = CACHE_DIR / f"emb_{name}{suffix}_{mode}.npy"
    stamp = cache.with_suffix(".json")
    if cache.exists() and stamp.exists():
        cached = np.load(cache)
        meta = json.loads(stamp.read_text())
        if cached.shape[0] == len(rows) and meta.get("encoder") == encoder.name:
            return cached
    started = time.perf_counter()
    vectors = encode_items(
        encoder, [item_embedding_texts(row["messages"], None, mode=mode) for row in rows]
    )
    print(f"  embedded {name} ({mode}, {encoder.name}): {len(rows)} items in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    np.save(cache, vectors.astype(np.float32))
    stamp.write_text(json.dumps({"texts": mode, "encoder": encoder.name}))
    return vectors


def model_inputs(vectors: np.ndarray, texts: str = "pair") -> np.ndarray:
    """The features made of those vectors (pair features for pairs), before the projection."""
    from labelling.learning.classifiers import model_inputs as inputs

    return inputs(vectors, pair=TEXTS[texts] == "pair")


FLOAT_OPTIONS = (
    "candidates",
    "density_weight",
    "random_share",
    "C",
    "near_copy",
    "alfa",
    "most_flips",
)


def parse_spec(spec: str) -> tuple[str, dict]:
    """A strategy and the simulate() options given with it, e.g.
    "badge,cold=kmeans_pp,density=0" -> ("badge", {...}): options that differ from the command
    line's, so one run compares variants against the same random baseline."""
    name, *options = spec.split(",")
    parsed: dict = {}
    for option in options:
        key, value = option.split("=", 1)
        key = {
            "cold": "cold_start", "density": "density_weight", "random": "random_share",
            "near": "near_copy",
        }.get(key, key)  # fmt: skip
        if key in FLOAT_OPTIONS:
            parsed[key] = float(value)
        elif key in ("batch", "start", "until", "alfamix_after", "margin_after"):
            parsed[key] = int(value)
        else:
            parsed[key] = value
    return name, parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, +1, ...")
    parser.add_argument(
        "--strategies",
        nargs="*",
        default=["random", "entropy", "badge", "badge_alfamix"],
        help="strategy[,option=value...], options: cold, uncertainty, candidates, density, "
        "random, C, batch, start (e.g. badge,cold=kmeans_pp)",
    )
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--start", type=int, default=None, help="first batch (default: --batch)")
    parser.add_argument("--budget", type=int, default=None, help="labels per run (default: pool)")
    parser.add_argument(
        "--candidates",
        type=float,
        default=3.0,
        help="diverse/hybrid/coreset: batches of candidates",
    )
    parser.add_argument(
        "--density-weight",
        type=float,
        default=None,
        help="density's power (default: badge 0.5, others 1)",
    )
    parser.add_argument(
        "--random-share", type=float, default=0.0, help="random part of each active batch"
    )
    parser.add_argument(
        "--cold",
        default="kmeans",
        choices=["kmeans", "kmeans_pp", "clusters", "random", "typiclust"],
        help="model strategies' first batch",
    )
    parser.add_argument(
        "--random-start", action="store_true", help="model strategies start from a random batch"
    )
    parser.add_argument(
        "--uncertainty", default="entropy", choices=["entropy", "margin", "least_confidence"]
    )
    parser.add_argument("--C", type=float, default=None, help="logistic regression's C")
    parser.add_argument("--test-share", type=float, default=0.5)
    parser.add_argument("--max-items", type=int, default=MAX_ITEMS, help="rows per set")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--texts",
        choices=list(TEXTS),
        default="pair",
        help="pair (the default embedding_text): prompt and reply embedded apart, features "
        "[p, r, p*r, |p-r|]; product: one prompt_reply text per item (the default before); "
        "reply: the last reply alone",
    )
    parser.add_argument(
        "--dimensions",
        type=int,
        default=None,
        help="directions the models read, as ANNOTATOR_FEATURE_DIMENSIONS (default: the "
        "product's, classifiers.FEATURE_DIMENSIONS; 0: all features)",
    )
    parser.add_argument("--embed-only", action="store_true")
    args = parser.parse_args()
    if not args.embed_only:
        from labelling.learning.classifiers import (
            DEFAULT_C,
            FEATURE_DIMENSIONS,
            reduced,
            reply_part,
        )
        from labelling.learning.simulate import simulate
        from labelling.learning.texts import prompt_hash

    specs = [parse_spec(spec) for spec in args.strategies]
    labels_of = [spec for spec, _ in zip(args.strategies, specs, strict=True)]
    savings: dict[str, list[float]] = {s: [] for s in labels_of if s != "random"}
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "sets": {}}
    for name in args.sets:
        rows, y, groups = load(name, args.max_items)
        vectors = embed(name, rows, args.max_items, args.texts)
        if args.embed_only:
            continue
        features = model_inputs(vectors, args.texts)
        # Near copies are told by the replies' own vectors; everything else reads the
        # features on the items' strongest directions, as a training run does.
        replies = reply_part(features, pair=TEXTS[args.texts] == "pair")
        dimensions = FEATURE_DIMENSIONS if args.dimensions is None else args.dimensions
        X = reduced(features, dimensions)
        started = time.perf_counter()
        # Each seed has its own group split and so its own full-data reference; a replay stops
        # at the first round reaching 95% of it (a seed that never does counts as the pool).
        base_options = {
            "batch": args.batch,
            "start": args.start,
            "budget": args.budget,
            "stop_share": TARGET_SHARE,
            "candidates": args.candidates,
            "density_weight": args.density_weight,
            "random_share": args.random_share,
            "cold_start": "random" if args.random_start else args.cold,
            "uncertainty": args.uncertainty,
            "C": DEFAULT_C if args.C is None else args.C,
            "test_share": args.test_share,
        }
        prompts = [prompt_hash(row["messages"], row.get("candidates")) for row in rows]
        curves = {
            label: [
                simulate(
                    X,
                    y,
                    groups,
                    strategy=strategy,
                    seed=seed,
                    prompts=prompts,
                    replies=replies,
                    **{**base_options, **extra},
                )  # fmt: skip
                for seed in range(args.first_seed, args.first_seed + args.seeds)
            ]
            for label, (strategy, extra) in zip(labels_of, specs, strict=True)
        }
        full = float(np.mean([c.full_f1 for c in curves[labels_of[0]]]))
        classes = ", ".join(f"{c}={int((y == c).sum())}" for c in np.unique(y))
        print(
            f"\n{name}: {len(y)} items ({classes}), {features.shape[1]} features read as "
            f"{X.shape[1]}, "
            f"full-data macro-F1 {full:.3f} (mean of {args.seeds} group splits), "
            f"{time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}"
        )
        width = max(10, *(len(label) for label in labels_of))
        print(f"  {'strategy':<{width}} {'mean':>6} {'median':>7} {'vs random':>10} "
              f"{'95% interval':>14}  labels to 95%, per seed")  # fmt: skip
        base, base_values = None, None
        results["sets"][name] = {"full_f1": full, "items": len(y), "strategies": {}}
        for label in labels_of:
            per_seed = [_reached(c, TARGET_SHARE) for c in curves[label]]
            values = [v if v is not None else c.labels[-1] for v, c in
                      zip(per_seed, curves[label], strict=True)]  # fmt: skip
            mean = float(np.mean(values))
            delta, spread = "", ""
            entry: dict = {"per_seed": values, "mean": mean}
            if label == "random":
                base, base_values = mean, values
            elif base:
                saving = 1 - mean / base
                savings[label].append(saving)
                delta = f"{-saving:+.0%}"
                low, high = _interval(values, base_values)
                spread = f"{-high:+.0%}..{-low:+.0%}"
                entry["saving"], entry["saving_interval"] = saving, [low, high]
            shown = " ".join(f">{c.labels[-1]}" if v is None else str(v)
                             for v, c in zip(per_seed, curves[label], strict=True))  # fmt: skip
            print(f"  {label:<{width}} {mean:>6.0f} {np.median(values):>7.0f} {delta:>10} "
                  f"{spread:>14}  {shown}")  # fmt: skip
            results["sets"][name]["strategies"][label] = entry
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.embed_only or not savings:
        return
    print("\nfewer labels than random, mean over seeds (goal: >= 30% on average, never < -5%)")
    width = max(10, *(len(label) for label in savings))
    for strategy, values in savings.items():
        if values:
            verdict = "met" if np.mean(values) >= 0.30 and min(values) >= -0.05 else "missed"
            print(
                f"  {strategy:<{width}} mean {np.mean(values):4.0%}  worst set {min(values):5.0%}"
                f"  per set {' '.join(f'{v:.0%}' for v in values)}  goal {verdict}"
            )


def _interval(values: list, base_values: list, draws: int = 5000) -> tuple[float, float]:
    """95% bootstrap interval of the saving 1 - mean(values) / mean(base_values), resampling
    seeds (each seed's replays share one split, so the two lists are drawn together)."""
    a, b = np.asarray(values, dtype=float), np.asarray(base_values, dtype=float)
    rows = np.random.default_rng(0).integers(0, a.size, (draws, a.size))
    savings = 1 - a[rows].mean(axis=1) / b[rows].mean(axis=1)
    low, high = np.percentile(savings, [2.5, 97.5])
    return float(low), float(high)


def _reached(curve, share: float) -> int | None:
    from labelling.learning.simulate import labels_to_reach

    return labels_to_reach(curve, share * curve.full_f1)


if __name__ == "__main__":
    main()
