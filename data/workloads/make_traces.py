"""Writes the request traces in this folder. Run: python data/workloads/make_traces.py

sharegpt_like.json: 1,000 requests (prompt_len, output_len) drawn from log-normal
distributions whose means match the ShareGPT statistics in the vLLM paper (Kwon et al.,
SOSP 2023, Fig. 11: mean input 161 tokens, mean output 338 tokens), sigma 1.0 in log space,
clipped to [4, 2048] and [4, 2048]; max_model_len 2048 for the naive allocator, which
reserves max_model_len per request. Arrivals: Poisson, 2 requests per decode step on average.
The seed is fixed, so the file is reproducible.
"""
import json
import math
import random
from pathlib import Path


def lognormal_with_mean(rng, mean, sigma):
    mu = math.log(mean) - sigma ** 2 / 2
    return rng.lognormvariate(mu, sigma)


def main():
    rng = random.Random(2023)
    reqs, t = [], 0.0
    for _ in range(1000):
        t += rng.expovariate(2.0)
        p = min(2048, max(4, round(lognormal_with_mean(rng, 161, 1.0))))
        o = min(2048, max(4, round(lognormal_with_mean(rng, 338, 1.0))))
        reqs.append({"arrival_step": int(t), "prompt_len": p, "output_len": o})
    out = {"description": __doc__.strip().splitlines()[2].strip() + " ...see make_traces.py",
           "max_model_len": 2048, "requests": reqs}
    Path(__file__).with_name("sharegpt_like.json").write_text(json.dumps(out, indent=0))


if __name__ == "__main__":
    main()
