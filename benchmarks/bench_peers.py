"""minigrad against its peers, MyGrad and micrograd (pip install mygrad micrograd scikit-learn),
ratios measured in one run (below 1.0: minigrad is faster).

(a) the RNN-cell example from PyTorch's intro, forward + backward (minigrad vs MyGrad);
(b) one training step of micrograd's own demo network, MLP(2, [16, 16, 1]) on 100 two-dimensional
    points (make_moons), max-margin loss + 1e-4 L2, plain SGD: micrograd's scalar engine as in its
    demo notebook, and the same network and loss written with tensors in minigrad and MyGrad.

    python benchmarks/bench_peers.py
"""

from __future__ import annotations

import numpy as np
from timing import race

import minigrad


def rnn_step(lib):
    rng = np.random.default_rng(0)
    data = [rng.standard_normal(s).astype(np.float32) for s in ((20, 20), (20, 10), (1, 10), (1, 20))]
    if lib is minigrad:
        W_h, W_x = (minigrad.tensor(a, requires_grad=True) for a in data[:2])
        x, prev_h = (minigrad.tensor(a) for a in data[2:])

        def step() -> None:
            W_h.grad = W_x.grad = None
            next_h = (minigrad.mm(W_h, prev_h.t()) + minigrad.mm(W_x, x.t())).tanh()
            next_h.sum().backward()
    else:
        W_h, W_x = (lib.tensor(a) for a in data[:2])
        x, prev_h = (lib.tensor(a, constant=True) for a in data[2:])

        def step() -> None:
            next_h = lib.tanh(lib.matmul(W_h, prev_h.T) + lib.matmul(W_x, x.T))
            next_h.sum().backward()

    return step


def moons() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=100, noise=0.1, random_state=1)
    return x, y * 2 - 1  # labels -1 / +1, as in micrograd's demo


def tensor_mlp_step(lib, lr: float = 0.05):
    """MLP(2, [16, 16, 1]) with ReLU, max-margin loss + 1e-4 L2, one SGD step, in minigrad or MyGrad."""
    x, y = moons()
    rng = np.random.default_rng(0)
    sizes = [2, 16, 16, 1]
    arrays = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        arrays += [rng.uniform(-1, 1, (fan_in, fan_out)), np.zeros(fan_out)]
    is_mg = lib is minigrad
    params = [lib.tensor(a, requires_grad=True) if is_mg else lib.tensor(a) for a in arrays]
    X = lib.tensor(x) if is_mg else lib.tensor(x, constant=True)
    Y = lib.tensor(y.astype(np.float64)[:, None]) if is_mg else lib.tensor(y.astype(np.float64)[:, None], constant=True)

    def relu(t):
        return t.relu() if is_mg else lib.nnet.relu(t)

    def step() -> None:
        h = relu(X @ params[0] + params[1])
        h = relu(h @ params[2] + params[3])
        scores = h @ params[4] + params[5]
        data_loss = relu(1 - Y * scores).mean()
        reg_loss = 1e-4 * sum((p * p).sum() for p in params)
        loss = data_loss + reg_loss
        if is_mg:
            for p in params:
                p.grad = None
        loss.backward()
        for p in params:
            grad = p.grad.data if is_mg else p.grad
            p.data -= lr * grad

    return step


def micrograd_step(lr: float = 0.05):
    """micrograd's demo step: its own MLP and Value engine, exactly as in its notebook."""
    from micrograd.engine import Value
    from micrograd.nn import MLP

    x, y = moons()
    model = MLP(2, [16, 16, 1])

    def step() -> None:
        inputs = [list(map(Value, row)) for row in x]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in model.parameters())
        total = data_loss + reg_loss
        model.zero_grad()
        total.backward()
        for p in model.parameters():
            p.data -= lr * p.grad

    return step


def main() -> None:
    import micrograd
    import mygrad

    print(f"minigrad {minigrad.__version__}, MyGrad {mygrad.__version__}, micrograd {micrograd.__name__}")
    t_rnn_mg, t_rnn_my = race([rnn_step(minigrad), rnn_step(mygrad)], 2000, 5)
    t_mlp_mg, t_mlp_my = race([tensor_mlp_step(minigrad), tensor_mlp_step(mygrad)], 300, 5)
    (t_mlp_micro,) = race([micrograd_step()], 2, 3)
    print(f"{'case':34} {'minigrad':>11} {'MyGrad':>11} {'micrograd':>11} {'vs MyGrad':>10} {'vs micrograd':>13}")
    print(
        f"{'(a) RNN cell fwd+bwd':34} {t_rnn_mg * 1e6:9.1f}us {t_rnn_my * 1e6:9.1f}us {'-':>11} "
        f"{t_rnn_mg / t_rnn_my:10.2f} {'-':>13}"
    )
    print(
        f"{'(b) MLP(2,[16,16,1]) step, 100 pts':34} {t_mlp_mg * 1e6:9.1f}us {t_mlp_my * 1e6:9.1f}us "
        f"{t_mlp_micro * 1e3:9.1f}ms {t_mlp_mg / t_mlp_my:10.2f} {t_mlp_micro / t_mlp_mg:11.0f}x faster"
    )


if __name__ == "__main__":
    main()
