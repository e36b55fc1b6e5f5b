"""The tutorial loop as the notes write it (d2l `train_ch6` / the beginner course): torchvision dataset +
ToTensor + DataLoader + a hand-written loop with an accuracy accumulator: the reference the benchmarks measure against.
"""
from __future__ import annotations

import time

import torch
from torch import nn


def d2l_loaders(root, batch_size: int, folder=None, workers: int = 4):
    import torchvision
    from torchvision import transforms

    trans = transforms.ToTensor()
    if folder is None:
        train = torchvision.datasets.FashionMNIST(root=str(root), train=True, transform=trans, download=False)
        test = torchvision.datasets.FashionMNIST(root=str(root), train=False, transform=trans, download=False)
    else:
        trans = transforms.Compose([transforms.Grayscale(), transforms.ToTensor()])
        train = torchvision.datasets.ImageFolder(str(folder / "train"), transform=trans)
        test = torchvision.datasets.ImageFolder(str(folder / "val"), transform=trans)
    return (torch.utils.data.DataLoader(train, batch_size, shuffle=True, num_workers=workers),
            torch.utils.data.DataLoader(test, batch_size, shuffle=False, num_workers=workers))


def accuracy(y_hat, y):
    return float((y_hat.argmax(axis=1).type(y.dtype) == y).type(y.dtype).sum())


def evaluate_accuracy(net, data_iter, device):
    net.eval()
    correct, total = 0.0, 0
    with torch.no_grad():
        for X, y in data_iter:
            X, y = X.to(device), y.to(device)
            correct += accuracy(net(X), y)
            total += y.numel()
    return correct / total


def train_ch6(net, train_iter, test_iter, num_epochs, lr, device, optimizer="sgd", on_epoch=None):
    """d2l's loop: per batch, zero_grad/forward/backward/step and float() metrics on the host. images/s covers the
    training loops (per-sample decoding in the workers and their start-up each epoch included, as the loop has them);
    train_end is the perf_counter() reading at the end of the last step."""
    net.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    images, seconds, epoch_s = 0, 0.0, []
    for epoch in range(num_epochs):
        net.train()
        start = time.perf_counter()
        metric_loss, metric_acc, n = 0.0, 0.0, 0
        for X, y in train_iter:
            opt.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            l = loss(y_hat, y)
            l.backward()
            opt.step()
            with torch.no_grad():
                metric_loss += float(l) * X.shape[0]
                metric_acc += accuracy(y_hat, y)
                n += X.shape[0]
        train_end = time.perf_counter()  # the last step of this epoch is done (end to end stops at the last one)
        epoch_s.append(train_end - start)
        seconds += epoch_s[-1]
        images += n
        test_acc = evaluate_accuracy(net, test_iter, device)
        if on_epoch:
            on_epoch(epoch + 1, test_acc)
    return {"images_per_s": images / seconds, "s_per_epoch": seconds / num_epochs, "test_acc": test_acc,
            "steady_images_per_s": steady_rate(n, epoch_s), "train_end": train_end,
            "train_loss": metric_loss / n, "train_acc": metric_acc / n}


def steady_rate(images_per_epoch: int, epoch_seconds: list[float]) -> float | None:
    """Images/s after the first epoch (warm-up, cuDNN autotuning and worker start-up left out); None for one epoch."""
    later = sorted(epoch_seconds[1:])
    return images_per_epoch / later[len(later) // 2] if later else None
