"""The CPU sync BN gives the statistics (and gradients) of one BN over the processes' joint batch."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gatekit.train.distributed import DistributedBatchNorm


def _worker(rank, world, port, x, grad_out, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    bn = DistributedBatchNorm(4)
    xs = x.chunk(world)[rank].clone().requires_grad_(True)
    y = bn(xs)
    (y * grad_out.chunk(world)[rank]).sum().backward()
    results[rank] = (y.detach(), xs.grad, bn.weight.grad.clone(), bn.running_mean.clone(), bn.running_var.clone())
    dist.destroy_process_group()


def test_distributed_bn_matches_single_process_bn():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 3, 3)
    g = torch.randn(8, 4, 3, 3)
    ref = torch.nn.BatchNorm2d(4)
    xr = x.clone().requires_grad_(True)
    yr = ref(xr)
    (yr * g).sum().backward()
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, 29531, x, g, results), nprocs=2, join=True)
    y = torch.cat([results[0][0], results[1][0]])
    gx = torch.cat([results[0][1], results[1][1]])
    assert torch.allclose(y, yr.detach(), atol=1e-5)
    assert torch.allclose(gx, xr.grad, atol=1e-5)
    assert torch.allclose(results[0][2] + results[1][2], ref.weight.grad, atol=1e-5)
    assert torch.allclose(results[0][3], ref.running_mean, atol=1e-6)
    assert torch.allclose(results[0][4], ref.running_var, atol=1e-5)
