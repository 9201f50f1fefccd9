"""tegrastats lines of JetPack 4, 5 and 6, the background sampler (a stand-in tegrastats on PATH), nvpmodel and jetson_clocks.

The lines follow the fields NVIDIA documents for each release (Jetson Linux Developer Guide, "tegrastats Utility";
L4T 32.x Development Guide, "tegrastats Utility" appendix): ``RAM X/YMB (lfb NxZMB)``, ``CPU [X%@F,...]`` with ``off``
for a core powered down, ``GR3D_FREQ X%`` with ``@F`` (JetPack 4), ``@[F]`` (JetPack 5) or ``@[F,F]`` per GPC
(JetPack 6 on AGX Orin), rails as ``NAME current/average`` in mW without a unit (JetPack 4, ``POM_5V_IN``,
``VDD_IN``) or with it (JetPack 5 and 6, ``VDD_IN 5000mW/5000mW``). The figures are ours.
"""

from __future__ import annotations

import os
import stat
import sys

import jsonschema
import pytest
import torch
from torch import nn

from edgecompress.profile import profile_model
from edgecompress.profile.latency_report import schema
from edgecompress.profile.tegrastats import TegrastatsSampler, parse_clocks, parse_line, parse_power_mode, summarize

# JetPack 4.6 (L4T 32.7), Jetson Nano: no date, IRAM-less, GR3D without a bracket, POM_ rails without a unit.
JETPACK4_NANO = ("RAM 1520/3956MB (lfb 312x4MB) SWAP 0/1978MB (cached 0MB) CPU [35%@1479,12%@1479,off,off] EMC_FREQ 9%@1600 "
                 "GR3D_FREQ 61%@921 PLL@36.5C CPU@39C PMIC@50C GPU@37.5C AO@43C thermal@38.25C "
                 "POM_5V_IN 4120/3870 POM_5V_GPU 1310/1150 POM_5V_CPU 980/880")
# JetPack 4 on a TX2: IRAM in kB, the old CPU frequency, VDD_ rails without a unit.
JETPACK4_TX2 = ("RAM 2650/7860MB (lfb 1010x4MB) SWAP 0/3930MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [20%@2035,off,off,18%@2035,6%@2035,9%@2035] "
                "EMC_FREQ 4%@1866 GR3D_FREQ 30%@1300 APE 150 PLL@41C MCPU@41C PMIC@100C Tboard@37C GPU@39C BCPU@41C thermal@40.1C Tdiode@38.75C "
                "VDD_SYS_GPU 1520/1400 VDD_SYS_SOC 760/700 VDD_IN 5600/5200 VDD_SYS_CPU 610/590 VDD_SYS_DDR 900/880")
# JetPack 5.1 (L4T 35), Xavier NX: a date first, GR3D_FREQ X%@[F], rails in mW with the unit.
JETPACK5_XAVIER_NX = ("11-20-2025 09:14:02 RAM 3400/6854MB (lfb 120x4MB) SWAP 12/3427MB (cached 0MB) CPU [44%@1420,30%@1420,27%@1420,31%@1420,off,off] "
                      "EMC_FREQ 21%@1600 GR3D_FREQ 88%@[1100] VIC_FREQ 115 APE 150 AUX@41.5C CPU@44C thermal@42.8C AO@40C GPU@43.5C PMIC@50C "
                      "VDD_IN 7120mW/6890mW VDD_CPU_GPU_CV 2840mW/2700mW VDD_SOC 1510mW/1490mW")
# JetPack 6 (L4T 36), AGX Orin: GR3D per GPC, other rails.
JETPACK6_AGX_ORIN = ("11-20-2025 10:02:44 RAM 9120/62841MB (lfb 300x4MB) SWAP 0/31420MB (cached 0MB) CPU [52%@2201,40%@2201,38%@2201,45%@2201,"
                     "20%@2201,18%@2201,16%@2201,22%@2201,5%@2201,3%@2201,2%@2201,4%@2201] EMC_FREQ 14%@3199 GR3D_FREQ 76%@[1300,1300] "
                     "NVENC off NVDEC off NVJPG off VIC off OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@51.2C soc2@47.9C "
                     "soc0@48.3C gpu@49.1C tj@51.2C soc1@47.6C VDD_GPU_SOC 9850mW/9600mW VDD_CPU_CV 3120mW/3000mW VIN_SYS_5V0 5010mW/4980mW")
# JetPack 6, Orin Nano: one GR3D frequency in brackets, VDD_IN.
JETPACK6_ORIN_NANO = ("RAM 4410/7620MB (lfb 40x4MB) SWAP 0/3810MB (cached 0MB) CPU [60%@1510,58%@1510,63%@1510,55%@1510,off,off] "
                      "EMC_FREQ 30%@2133 GR3D_FREQ 97%@[624] NVDEC off NVJPG off VIC off OFA off APE 200 cpu@53C soc2@50.1C soc0@50.8C "
                      "gpu@52.4C tj@53C soc1@50.2C VDD_IN 9870mW/9500mW VDD_CPU_GPU_CV 4310mW/4150mW VDD_SOC 2520mW/2480mW")


@pytest.mark.parametrize("line, expected", [
    (JETPACK4_NANO, {"ram_used_mb": 1520, "ram_total_mb": 3956, "cpu_percent": 23.5, "gr3d_percent": 61,
                     "power_mw": {"POM_5V_IN": 4120, "POM_5V_GPU": 1310, "POM_5V_CPU": 980}}),
    (JETPACK4_TX2, {"ram_used_mb": 2650, "ram_total_mb": 7860, "cpu_percent": 13.25, "gr3d_percent": 30,
                    "power_mw": {"VDD_SYS_GPU": 1520, "VDD_SYS_SOC": 760, "VDD_IN": 5600, "VDD_SYS_CPU": 610, "VDD_SYS_DDR": 900}}),
    (JETPACK5_XAVIER_NX, {"ram_used_mb": 3400, "ram_total_mb": 6854, "cpu_percent": 33.0, "gr3d_percent": 88,
                          "power_mw": {"VDD_IN": 7120, "VDD_CPU_GPU_CV": 2840, "VDD_SOC": 1510}}),
    (JETPACK6_AGX_ORIN, {"ram_used_mb": 9120, "ram_total_mb": 62841, "cpu_percent": 22.083333333333332, "gr3d_percent": 76,
                         "power_mw": {"VDD_GPU_SOC": 9850, "VDD_CPU_CV": 3120, "VIN_SYS_5V0": 5010}}),
    (JETPACK6_ORIN_NANO, {"ram_used_mb": 4410, "ram_total_mb": 7620, "cpu_percent": 59.0, "gr3d_percent": 97,
                          "power_mw": {"VDD_IN": 9870, "VDD_CPU_GPU_CV": 4310, "VDD_SOC": 2520}}),
], ids=["jetpack4-nano", "jetpack4-tx2", "jetpack5-xavier-nx", "jetpack6-agx-orin", "jetpack6-orin-nano"])
def test_parse_line_of_each_jetpack(line, expected):
    parsed = parse_line(line)
    assert parsed.pop("power_mw") == expected.pop("power_mw")  # every rail, no RAM/SWAP/IRAM mistaken for one
    assert parsed == pytest.approx(expected)


def test_summary_has_the_schemas_ranges():
    busier = JETPACK6_ORIN_NANO.replace("GR3D_FREQ 97%", "GR3D_FREQ 99%").replace("VDD_IN 9870mW", "VDD_IN 10130mW")
    summary = summarize([JETPACK6_ORIN_NANO, "", busier], interval_ms=50)
    assert summary["samples"] == 2 and summary["interval_ms"] == 50
    assert summary["gr3d_percent"] == {"mean": 98.0, "max": 99.0}
    assert summary["power_mw"]["VDD_IN"] == {"mean": 10000.0, "max": 10130.0}
    jsonschema.validate(summary, schema()["properties"]["tegrastats"] | {"$defs": schema()["$defs"]})
    assert summarize(["no stats here"], 100) is None


def test_power_mode_and_clocks_as_the_tools_print_them():
    assert parse_power_mode("NV Power Mode: MAXN\n0\n") == "MAXN (0)"
    assert parse_power_mode("NVPM WARN: ...\nNV Power Mode: 15W\n2\n") == "15W (2)"
    shown = ("SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Developer Kit\nOnline CPUs: 0-5\n"
             "cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1510400 CurrentFreq=1510400 IdleStates: WFI=0 c7=0\n"
             "GPU MinFreq=306000000 MaxFreq=624750000 CurrentFreq=624750000\n"
             "EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=1\nFan: PWM=130\nNV Power Mode: 15W\n")
    clocks = parse_clocks(shown)
    assert clocks["GPU"] == {"MinFreq": "306000000", "MaxFreq": "624750000", "CurrentFreq": "624750000"}
    assert clocks["cpu0"]["Governor"] == "schedutil" and clocks["EMC"]["FreqOverride"] == "1" and clocks["Fan"] == {"PWM": "130"}
    assert set(clocks) == {"cpu0", "GPU", "EMC", "Fan"}


@pytest.fixture
def fake_tegrastats(tmp_path, monkeypatch):
    """A stand-in ``tegrastats`` on PATH printing JetPack 6 lines every --interval ms, as the real one does."""
    script = tmp_path / "bin" / "tegrastats"
    script.parent.mkdir()
    script.write_text(f"""#!{sys.executable}
import sys, time
interval = int(sys.argv[sys.argv.index("--interval") + 1]) / 1000
while True:
    print({JETPACK6_ORIN_NANO!r}, flush=True)
    time.sleep(interval)
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return script


def test_sampler_reads_tegrastats_in_the_background(fake_tegrastats):
    import time

    with TegrastatsSampler(interval_ms=20) as sampler:
        time.sleep(0.5)
    summary = sampler.summary()
    assert summary["samples"] >= 2 and summary["power_mw"]["VDD_IN"]["max"] == 9870.0
    assert TegrastatsSampler(enabled=False).summary() is None


def test_the_worker_records_tegrastats_during_the_timed_runs(fake_tegrastats, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    torch.onnx.export(nn.Conv2d(3, 4, 3).eval(), (torch.randn(1, 3, 64, 64),), str(path), dynamo=False)
    report = profile_model(path, iterations=200, warmup=1, threads=1, tegrastats_ms=10)
    assert report.tegrastats["samples"] >= 1 and report.tegrastats["gr3d_percent"]["mean"] == 97.0
    jsonschema.validate(report.to_dict(), schema())
