"""Is a BatchNorm network more robust to losing channels? Cumulative channel
ablation (Morcos et al. 2018, as seed 001 presents BN's regularizing effect).

Take LeNet-5 trained without and with BN (the LeNet-5 lesson's checkpoints
when it has run on Fashion-MNIST, otherwise trained here), silence its
convolution channels one after another in random orders (a silenced channel
outputs 0 after its ReLU), and plot the test accuracy against the fraction of
channels ablated, with the spread over orders. Morcos et al. find networks that
generalize better depend less on single directions, and BN networks less so.
We report what ours do, whichever way it comes out.

    python -m lessons.bn_regularization            # 71 s (82 s training its own models), 2-core CPU
    python -m lessons.bn_regularization --quick    # seconds, synthetic images
"""
# %% Settings (flags override them)
import json
import os

import numpy as np

import minidl as md
from lessons.common import (RunStore, evaluate, fashion_mnist, lesson_args, lesson_parser,
                            run_identity, show_figure, train_classifier, write_json, write_text)

ORDERS = 10                     # random ablation orders
TRAIN, TEST, EPOCHS, BATCH, LR = 20000, 2000, 3, 64, 0.01
LENET_RUNS = "runs/lenet5_batchnorm"   # where the LeNet-5 lesson keeps its checkpoints
CHECKPOINTS = {"no BN": "no_BN.npz", "BN": "BN_decay0.9.npz"}
SEED = 0
QUICK = dict(train=400, test=200, epochs=1, orders=3, levels=[0, 6, 11, 16, 22])

parser = lesson_parser("bn_regularization", __doc__, "synthetic images, tiny runs", seed=SEED)
parser.add_argument("--orders", type=int, default=ORDERS)
parser.add_argument("--lenet-runs", default=LENET_RUNS, help="the LeNet-5 lesson's output folder")
args = lesson_args(parser)
if args.quick:
    args.orders = QUICK["orders"]
out = args.out
dataset, train, test = fashion_mnist(args.quick, QUICK["train"] if args.quick else TRAIN,
                                     QUICK["test"] if args.quick else TEST, args.seed)


# %% 1. The two networks: the LeNet-5 lesson's, or trained here
def lenet_checkpoint(label):
    """The LeNet-5 lesson's trained model, if it ran on this dataset (and not in quick mode)."""
    path = os.path.join(args.lenet_runs, CHECKPOINTS[label])
    if args.quick or not os.path.exists(path):
        return None
    state = md.load(path)
    made_by = json.loads(str(state.get("run", "{}")))
    if made_by.get("dataset") != "fashion-mnist" or made_by.get("quick"):
        print(f"{path} was made on {made_by.get('dataset')}: training here instead")
        return None
    return state, made_by


models, provenance = {}, {}
for label, norm in (("no BN", None), ("BN", "batch")):
    md.manual_seed(args.seed)
    model = md.models.LeNet5(in_channels=1, input_size=28, norm=norm)
    found = lenet_checkpoint(label)
    if found is not None:
        model.load_state_dict(found[0]["model"])
        # the lesson normalized with its own training split's statistics; ours are close (same data)
        provenance[label] = f"the LeNet-5 lesson's checkpoint ({found[1]['epochs']} epochs on all of Fashion-MNIST)"
    else:
        train_classifier(model, train, QUICK["epochs"] if args.quick else EPOCHS, BATCH, LR, args.seed,
                         desc=label)
        provenance[label] = f"trained here ({len(train)} images, {QUICK['epochs'] if args.quick else EPOCHS} epochs)"
    model.eval()
    models[label] = model
    print(f"{label}: {provenance[label]}; test accuracy {evaluate(model, test)[1]:.2f}%")
store = RunStore(out, run_identity(dataset=dataset, orders=args.orders, seed=args.seed, quick=args.quick,
                                   models=provenance), fresh=args.fresh)


# %% 2. Silencing channels: a mask after each convolution block's ReLU
def accuracy_with_ablated(model, ablated):
    """Test accuracy with the channels in ``ablated`` ({(conv index, channel)}) set to 0."""
    correct = 0
    with md.no_grad():
        for x, y in md.data.DataLoader(test, 500):
            h, conv = x, -1
            for layer in model.features.children():
                conv += isinstance(layer, md.nn.Conv2d)
                h = layer(h)
                if isinstance(layer, md.nn.ReLU):
                    mask = np.ones((1, h.shape[1], 1, 1), np.float32)
                    for c in (c for k, c in ablated if k == conv):
                        mask[0, c] = 0
                    h = h * md.Tensor(mask)
            correct += int((model.classifier(h).numpy().argmax(1) == y.numpy()).sum())
    return 100.0 * correct / len(test)


channels = [(0, c) for c in range(6)] + [(1, c) for c in range(16)]     # LeNet-5's 6 + 16 conv channels
levels = QUICK["levels"] if args.quick else list(range(len(channels) + 1))   # how many are ablated
for label, model in models.items():
    for order in range(args.orders):
        key = f"{label}/{order}"
        if key in store:
            continue
        perm = np.random.default_rng([args.seed, order]).permutation(len(channels))
        curve = [accuracy_with_ablated(model, {channels[i] for i in perm[:k]}) for k in levels]
        store[key] = curve
    curves = np.array([store[f"{label}/{o}"] for o in range(args.orders)])
    half = levels.index(min(levels, key=lambda k: abs(k - len(channels) / 2)))
    print(f"{label}: accuracy with {levels[half]} of {len(channels)} channels ablated "
          f"{curves[:, half].mean():.2f} ± {curves[:, half].std():.2f}%")

# %% 3. Accuracy against the fraction ablated, spread over orders
import matplotlib.pyplot as plt  # noqa: E402

fractions = np.array(levels) / len(channels)
fig, ax = plt.subplots(figsize=(6.5, 4.2))
summary = {}
for label, color in (("no BN", "tab:gray"), ("BN", "tab:red")):
    curves = np.array([store[f"{label}/{o}"] for o in range(args.orders)])
    # normalized to the intact network, as Morcos et al. plot it
    relative = curves / curves[:, :1]
    ax.plot(fractions, relative.mean(axis=0), color=color, label=label)
    ax.fill_between(fractions, relative.min(axis=0), relative.max(axis=0), color=color, alpha=0.2)
    summary[label] = {"intact_acc": float(curves[0, 0]), "mean_curve": curves.mean(axis=0).tolist(),
                      "area_relative": float(np.trapezoid(relative.mean(axis=0), fractions))}
ax.set(xlabel="fraction of conv channels ablated", ylabel="test accuracy / intact accuracy",
       title="Cumulative channel ablation (band: min–max over orders)")
ax.legend()
show_figure(fig, f"{out}/ablation.png")

more_robust = summary["BN"]["area_relative"] > summary["no BN"]["area_relative"]
answer = (f"Area under the relative-accuracy curve: BN {summary['BN']['area_relative']:.3f}, no BN "
          f"{summary['no BN']['area_relative']:.3f}: the BN network is "
          f"{'MORE' if more_robust else 'LESS'} robust to channel ablation here "
          f"({'as' if more_robust else 'unlike what'} Morcos et al. report for BN networks).")
print(answer)
write_json(f"{out}/results.json", {"dataset": dataset, "models": provenance, "summary": summary,
                                   "curves": store.runs})
write_text(f"{out}/summary.md", f"# BN and cumulative channel ablation ({dataset})\n\n"
           + "\n".join(f"- {k}: {v}; intact test accuracy {summary[k]['intact_acc']:.2f}%" for k, v in provenance.items())
           + f"\n\n{answer}\n\n![ablation](ablation.png)\n")
print(f"plots, results.json and summary.md in {out}/")
