/* tests/unit/test_topo.c - the topology model, every importer on the real
 * files of ../shared/topologies (the facts their README lists), malformed
 * and truncated inputs, the sysfs fixtures, the pairing rule, validation,
 * `dpctl topo` and golden outputs (DP_UPDATE_GOLDEN=1 rewrites them). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "common/dp_buf.h"
#include "topo/dp_topo.h"
#include "topo/topo_int.h"
#include "tests/unit/dp_test.h"
#include "worker/dp_worker.h"

#define TOPO_DIR SHARED_DIR "/topologies/"

static struct dp_topo *load(const char *name)
{
	struct dp_err err = { 0 };
	struct dp_topo *t = NULL;
	char path[512];
	int rc;

	(void)snprintf(path, sizeof(path), "%s%s", TOPO_DIR, name);
	rc = dp_topo_import(path, &t, &err);
	if (rc)
		fail_msg("import %s: %d %s", name, rc, err.msg);
	assert_non_null(t);
	return t;
}

/* Import @a and merge @b into it. */
static struct dp_topo *load2(const char *a, const char *b)
{
	struct dp_topo *t = load(a), *u = load(b);
	struct dp_err err = { 0 };

	assert_int_equal(dp_topo_merge(t, u, &err), 0);
	dp_topo_free(u);
	return t;
}

static const char *gpu_nic(const struct dp_topo *t, int g)
{
	return dp_topo_nic_label(t, dp_topo_gpu(t, g)->nic);
}

static int count_issues(const struct dp_topo *t, enum dp_topo_severity sev, const char *needle)
{
	int n = 0;

	for (int i = 0; i < dp_topo_issue_count(t); i++)
		if (dp_topo_issue(t, i)->severity == sev &&
		    strstr(dp_topo_issue(t, i)->msg, needle))
			n++;
	return n;
}

static const struct dp_topo_numa *numa_id(const struct dp_topo *t, int id)
{
	for (int i = 0; i < dp_topo_numa_count(t); i++)
		if (dp_topo_numa(t, i)->id == id)
			return dp_topo_numa(t, i);
	fail_msg("no NUMA node %d", id);
	return NULL;
}

/* ---- NCCL XML ------------------------------------------------------------ */

static void azure_ndv5_h100(void **state)
{
	static const char *gpus[] = {
		"0001", "0002", "0003", "0008", "0009", "000a", "000b", "000c"
	};
	struct dp_topo *t = load("azure-ndv5-h100-topo.xml");

	(void)state;
	assert_int_equal(dp_topo_gpu_count(t), 8);
	assert_int_equal(dp_topo_nic_count(t), 8);
	assert_int_equal(dp_topo_numa_count(t), 2);
	/* Linux cpumask words are most significant first: numaid 0 "00000000,0000ffff,
	 * ffffffff" is CPUs 0-47.  (The README says 48-95 here; its own NDv4 and p4d
	 * entries decode the same format the way we do.) */
	assert_string_equal(numa_id(t, 0)->cpus, "0-47");
	assert_string_equal(numa_id(t, 1)->cpus, "48-95");
	assert_int_equal(numa_id(t, 1)->ncpus, 48);
	for (int g = 0; g < 8; g++) {
		const struct dp_topo_gpu *gp = dp_topo_gpu(t, g);
		const struct dp_topo_nic *n = dp_topo_nic(t, gp->nic);
		char pci[16];

		(void)snprintf(pci, sizeof(pci), "%s:00:00.0", gpus[g]);
		assert_string_equal(gp->pci, pci);
		assert_int_equal(gp->numa, g < 4 ? 0 : 1);
		assert_int_equal(gp->index, g);
		/* rail i: GPU i <-> NIC 01xx on the same virtual switch */
		(void)snprintf(pci, sizeof(pci), "01%02x:00:00.0", g + 1);
		assert_string_equal(n->pci, pci);
		assert_int_equal(gp->dist, DP_TOPO_DIST_PIX);
		assert_int_equal(gp->hops, 2);
		assert_int_equal(gp->nvlinks, 0); /* not in the file: comes from NVML */
		assert_int_equal(n->link_layer, DP_TOPO_LL_IB);
		assert_true(n->rate_gbps == 0); /* speed not in the file */
		assert_int_equal(n->ngpus, 1);
	}
	assert_int_equal(count_issues(t, DP_TOPO_WARN, ""), 0);
	dp_topo_free(t);
}

static void azure_ndv4_a100(void **state)
{
	static const struct {
		const char *gpu, *nic;
		int numa;
	} rails[] = {
		{ "0001", "0101", 1 }, { "0002", "0102", 1 }, { "0003", "0103", 0 },
		{ "0004", "0104", 0 }, { "000b", "0105", 3 }, { "000c", "0106", 3 },
		{ "000d", "0107", 2 }, { "000e", "0108", 2 },
	};
	struct dp_topo *t = load("azure-ndv4-a100-topo.xml");

	(void)state;
	assert_int_equal(dp_topo_gpu_count(t), 8);
	assert_int_equal(dp_topo_nic_count(t), 8);
	assert_int_equal(dp_topo_numa_count(t), 4);
	assert_string_equal(numa_id(t, 0)->cpus, "0-23");
	assert_string_equal(numa_id(t, 1)->cpus, "24-47");
	assert_string_equal(numa_id(t, 2)->cpus, "48-71");
	assert_string_equal(numa_id(t, 3)->cpus, "72-95");
	for (int g = 0; g < 8; g++) {
		const struct dp_topo_gpu *gp = dp_topo_gpu(t, g);

		assert_memory_equal(gp->pci, rails[g].gpu, 4);
		assert_memory_equal(dp_topo_nic(t, gp->nic)->pci, rails[g].nic, 4);
		assert_int_equal(gp->numa, rails[g].numa);
		assert_int_equal(dp_topo_nic(t, gp->nic)->numa, rails[g].numa);
	}
	/* two GPUs + two NICs per switch: equal distance, paired in bus order */
	assert_int_equal(count_issues(t, DP_TOPO_INFO, "paired in PCI bus order"), 4);
	assert_int_equal(count_issues(t, DP_TOPO_WARN, ""), 0);
	dp_topo_free(t);
}

static void azure_ndv4_lspci(void **state)
{
	struct dp_topo *t = load("azure-ndv4-a100-lspci-nn.txt");
	int ib = 0;

	(void)state;
	assert_int_equal(dp_topo_gpu_count(t), 8);
	for (int g = 0; g < 8; g++) {
		assert_string_equal(dp_topo_gpu(t, g)->model, "A100 SXM4 80GB");
		assert_int_equal(dp_topo_gpu(t, g)->pci_device, 0x20b2);
	}
	assert_string_equal(dp_topo_gpu(t, 4)->pci, "000b:00:00.0");
	assert_int_equal(dp_topo_nvswitch_count(t), 6);
	assert_int_equal(dp_topo_nic_count(t), 9);
	for (int i = 0; i < 9; i++) {
		const struct dp_topo_nic *n = dp_topo_nic(t, i);

		if (n->link_layer == DP_TOPO_LL_IB) {
			ib++;
			assert_int_equal(n->rdma, 1);
			assert_memory_equal(n->pci, "01", 2);
		} else {
			/* the host network VF, not the RDMA fabric */
			assert_string_equal(n->pci, "c941:00:02.0");
			assert_int_equal(n->link_layer, DP_TOPO_LL_ETH);
		}
	}
	assert_int_equal(ib, 8);
	/* no PCIe tree in lspci: no pairing, and it says so */
	assert_int_equal(dp_topo_gpu(t, 0)->nic, -1);
	assert_int_equal(count_issues(t, DP_TOPO_WARN, "no PCIe path information"), 1);
	dp_topo_free(t);
}

static void azure_ndv4_xml_plus_lspci(void **state)
{
	struct dp_topo *t = load2("azure-ndv4-a100-topo.xml", "azure-ndv4-a100-lspci-nn.txt");

	(void)state;
	assert_int_equal(dp_topo_gpu_count(t), 8);
	assert_int_equal(dp_topo_nic_count(t), 9);
	assert_int_equal(dp_topo_nvswitch_count(t), 6); /* what the XML omits */
	assert_string_equal(dp_topo_gpu(t, 0)->model, "A100 SXM4 80GB");
	assert_int_equal(dp_topo_gpu(t, 0)->numa, 1);
	assert_memory_equal(dp_topo_nic(t, dp_topo_gpu(t, 0)->nic)->pci, "0101", 4);
	assert_string_equal(dp_topo_sources(t), "nccl-xml,lspci");
	dp_topo_free(t);
}

static void aws_p4d(void **state)
{
	struct dp_topo *t = load("aws-p4d-24xl-a100-topo.xml");

	(void)state;
	assert_int_equal(dp_topo_gpu_count(t), 8);
	assert_int_equal(dp_topo_nic_count(t), 4);
	assert_string_equal(numa_id(t, 0)->cpus, "0-23,48-71");
	assert_string_equal(numa_id(t, 1)->cpus, "24-47,72-95");
	for (int g = 0; g < 8; g++) {
		const struct dp_topo_gpu *gp = dp_topo_gpu(t, g);
		const struct dp_topo_nic *n = dp_topo_nic(t, gp->nic);

		assert_string_equal(gp->model, "A100 SXM4 40GB");
		assert_int_equal(gp->numa, g < 4 ? 0 : 1);
		/* GPU 2k and 2k+1 share NIC k on their switch (1b.0) */
		assert_int_equal(gp->nic, g / 2);
		assert_memory_equal(n->pci + 10, ".0", 2);
		assert_memory_equal(n->pci + 8, "1b", 2);
		assert_memory_equal(n->pci, gp->pci, 7);
		assert_int_equal(n->ngpus, 2);
		assert_string_equal(n->model, "EFA");
		assert_int_equal(gp->dist, DP_TOPO_DIST_PIX);
	}
	assert_int_equal(count_issues(t, DP_TOPO_WARN, "share 1 NIC"), 4);
	dp_topo_free(t);
}

static void aws_p5_nics_only(void **state)
{
	struct dp_topo *t = load("aws-p5-48xl-h100-topo-nics-only.xml");
	int per_numa[2] = { 0, 0 };

	(void)state;
	assert_int_equal(dp_topo_gpu_count(t), 0);
	assert_int_equal(dp_topo_nic_count(t), 32);
	assert_int_equal(dp_topo_numa_count(t), 2);
	/* 8 switches with 4 NIC functions each */
	for (int i = 0; i < 32; i++) {
		const struct topo_nic *n = &t->nics[i];
		int parent = t->pci[n->pcin].parent;
		int siblings = 0;

		per_numa[n->pub.numa]++;
		assert_true(parent >= 0);
		for (int j = 0; j < 32; j++)
			siblings += t->pci[t->nics[j].pcin].parent == parent;
		assert_int_equal(siblings, 4);
	}
	assert_int_equal(per_numa[0], 16);
	assert_int_equal(per_numa[1], 16);
	dp_topo_free(t);
}

static void ibm_gx3d_reversed(void **state)
{
	static const char *rails[] = { "mlx5_7", "mlx5_6", "mlx5_5", "mlx5_4",
				       "mlx5_3", "mlx5_2", "mlx5_1", "mlx5_0" };
	static const char *bus[] = { "a4", "ae", "b8", "c2", "cc", "d6", "e0", "ea" };
	struct dp_topo *t = load("ibm-vpc-gx3d-h100-nccl-topo.xml");

	(void)state;
	assert_int_equal(dp_topo_gpu_count(t), 8);
	assert_int_equal(dp_topo_nic_count(t), 8);
	assert_string_equal(numa_id(t, 0)->cpus, "0-79");
	assert_string_equal(numa_id(t, 1)->cpus, "80-159");
	assert_int_equal(dp_topo_nvswitch_count(t), 4);
	for (int g = 0; g < 8; g++) {
		const struct dp_topo_gpu *gp = dp_topo_gpu(t, g);
		const struct dp_topo_nic *n = dp_topo_nic(t, gp->nic);

		assert_memory_equal(gp->pci + 5, bus[g], 2);
		assert_string_equal(gpu_nic(t, g), rails[g]);
		assert_int_equal(gp->numa, g < 4 ? 0 : 1);
		assert_int_equal(n->numa, gp->numa);
		assert_int_equal(gp->nvlinks, 18);
		assert_int_equal(gp->nvswitch, 1);
		assert_int_equal(gp->npeers, 4);
		assert_string_equal(gp->model, "H100 SXM5 80GB");
		assert_int_equal(n->link_layer, DP_TOPO_LL_ETH);
		assert_true(n->rate_gbps == 200);
		assert_string_equal(n->model, "15b3:101e"); /* CX VF in Ethernet mode: RoCE */
	}
	/* 8 virtual bridges, each holding one GPU and one NIC */
	{
		int bridges = 0;

		for (int i = 0; i < t->npci; i++)
			if (t->pci[i].kind == TOPO_PCI_BRIDGE) {
				int kids = 0;

				bridges++;
				for (int j = 0; j < t->npci; j++)
					kids += t->pci[j].parent == i;
				assert_int_equal(kids, 2);
			}
		assert_int_equal(bridges, 8);
	}
	dp_topo_free(t);
}

/* ---- nvidia-smi, ibstat, ibv_devinfo, sysfs snapshot --------------------- */

static void deepep_topo_mp(void **state)
{
	struct dp_topo *t = load("deepep-issue397-h100x8-12nic-nvidia-smi-topo-mp.txt");
	const struct dp_topo_gpu *g0;

	(void)state;
	assert_int_equal(dp_topo_gpu_count(t), 8);
	assert_int_equal(dp_topo_nic_count(t), 12);
	for (int g = 0; g < 8; g++)
		assert_int_equal(dp_topo_gpu(t, g)->numa, g < 4 ? 0 : 1);
	assert_string_equal(numa_id(t, 0)->cpus, "0,2,4,6,8,10");
	assert_string_equal(numa_id(t, 1)->cpus, "1,3,5,7,9,11");
	/* GPU0 is PIX to mlx5_0/1/2: ambiguous without knowing the RDMA ports */
	g0 = dp_topo_gpu(t, 0);
	assert_int_equal(g0->nnear, 3);
	assert_string_equal(dp_topo_nic_label(t, g0->near[1]), "mlx5_1");
	assert_string_equal(dp_topo_nic_label(t, g0->near[2]), "mlx5_2");
	assert_string_equal(gpu_nic(t, 1), "mlx5_3");
	assert_string_equal(gpu_nic(t, 7), "mlx5_11");
	assert_int_equal(count_issues(t, DP_TOPO_WARN, "3 NICs at equal distance"), 2);
	dp_topo_free(t);
}

/* Older drivers: mlx5_k column headers, space-aligned (sglang re-formats),
 * an ANSI-underlined header, NV# cells. */
static void smi_topo_m_space_aligned_with_nvlink(void **state)
{
	static const char text[] =
		"        \033[4mGPU0    GPU1    mlx5_0  mlx5_1  CPU Affinity    NUMA Affinity\033[0m\n"
		"GPU0     X      NV18    PIX     SYS     0-55            0\n"
		"GPU1    NV18     X      SYS     PIX     56-111          1\n"
		"mlx5_0  PIX     SYS      X      SYS\n"
		"mlx5_1  SYS     PIX     SYS      X\n"
		"\n"
		"Legend:\n"
		"\n"
		"  X    = Self\n"
		"  NV#  = Connection traversing a bonded set of # NVLinks\n";
	struct dp_err err = { 0 };
	struct dp_topo *t = NULL;

	(void)state;
	assert_int_equal(dp_topo_import_mem("m.txt", NULL, text, strlen(text), &t, &err), 0);
	assert_string_equal(dp_topo_sources(t), "nvidia-smi-topo");
	assert_int_equal(dp_topo_gpu_count(t), 2);
	assert_int_equal(dp_topo_nic_count(t), 2);
	assert_string_equal(gpu_nic(t, 0), "mlx5_0");
	assert_string_equal(gpu_nic(t, 1), "mlx5_1");
	assert_int_equal(dp_topo_gpu(t, 1)->dist, DP_TOPO_DIST_PIX);
	assert_int_equal(dp_topo_gpu(t, 0)->nvlinks, 18);
	assert_int_equal(dp_topo_gpu(t, 1)->numa, 1);
	assert_string_equal(numa_id(t, 1)->cpus, "56-111");
	assert_int_equal(numa_id(t, 1)->ncpus, 56);
	dp_topo_free(t);
}

static void deepep_ibv_devinfo(void **state)
{
	static const char *names[] = { "mlx5_0", "mlx5_3", "mlx5_4",  "mlx5_5",
				       "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11" };
	struct dp_topo *t = load("deepep-issue397-h100x8-ibv_devinfo.txt");

	(void)state;
	assert_int_equal(dp_topo_nic_count(t), 8);
	for (int i = 0; i < 8; i++) {
		const struct dp_topo_nic *n = dp_topo_nic(t, i);

		assert_string_equal(n->name, names[i]);
		assert_int_equal(n->state, DP_TOPO_STATE_ACTIVE);
		assert_int_equal(n->link_layer, DP_TOPO_LL_IB);
		assert_string_equal(n->model, "MT4129");
		assert_true(n->rate_gbps == 0); /* ibv_devinfo prints no rate */
	}
	dp_topo_free(t);
}

static void deepep_merged_rail_map(void **state)
{
	static const char *rails[] = { "mlx5_0", "mlx5_3", "mlx5_4",  "mlx5_5",
				       "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11" };
	struct dp_topo *t = load2("deepep-issue397-h100x8-12nic-nvidia-smi-topo-mp.txt",
				  "deepep-issue397-h100x8-ibv_devinfo.txt");

	(void)state;
	for (int g = 0; g < 8; g++) {
		assert_string_equal(gpu_nic(t, g), rails[g]);
		assert_int_equal(dp_topo_gpu(t, g)->nnear, 1);
	}
	for (int i = 0; i < dp_topo_nic_count(t); i++) {
		const struct dp_topo_nic *n = dp_topo_nic(t, i);
		int extra = strcmp(n->name, "mlx5_1") == 0 || strcmp(n->name, "mlx5_2") == 0 ||
			    strcmp(n->name, "mlx5_7") == 0 || strcmp(n->name, "mlx5_8") == 0;

		assert_int_equal(n->usable, !extra);
	}
	assert_int_equal(count_issues(t, DP_TOPO_WARN, ""), 0);
	assert_int_equal(count_issues(t, DP_TOPO_INFO, "not among the RDMA ports"), 4);
	/* merging the other way round gives the same map */
	dp_topo_free(t);
	t = load2("deepep-issue397-h100x8-ibv_devinfo.txt",
		  "deepep-issue397-h100x8-12nic-nvidia-smi-topo-mp.txt");
	for (int g = 0; g < 8; g++)
		assert_string_equal(gpu_nic(t, g), rails[g]);
	dp_topo_free(t);
}

static void gpud_ibstat_roce(void **state)
{
	struct dp_topo *t = load("gpud-h100-roce-12ca-ibstat.txt");
	int cx7 = 0, cx6 = 0;

	(void)state;
	assert_int_equal(dp_topo_nic_count(t), 12);
	assert_string_equal(dp_topo_nic(t, 2)->name, "mlx5_10"); /* lexical order kept */
	for (int i = 0; i < 12; i++) {
		const struct dp_topo_nic *n = dp_topo_nic(t, i);
		long k = strtol(n->name + 5, NULL, 10);
		int rail = k == 0 || k == 3 || k == 4 || k == 5 || k == 6 || k >= 9;

		assert_int_equal(n->link_layer, DP_TOPO_LL_ETH);
		assert_int_equal(n->state, DP_TOPO_STATE_ACTIVE);
		if (rail) {
			assert_string_equal(n->model, "MT4129");
			assert_true(n->rate_gbps == 400);
			cx7++;
		} else {
			assert_string_equal(n->model, "MT4125");
			assert_true(n->rate_gbps == 100);
			cx6++;
		}
	}
	assert_int_equal(cx7, 8);
	assert_int_equal(cx6, 4);
	dp_topo_free(t);
}

static void gpud_ibstatus_hdr(void **state)
{
	struct dp_topo *t = load("gpud-a100-ib-ibstatus.txt");

	(void)state;
	/* mlx5_0..7 are the 8 HDR rails; the file also lists an Ethernet mlx5_8
	 * at 40 Gb/s (the README counts only the 8 InfiniBand devices) */
	assert_int_equal(dp_topo_nic_count(t), 9);
	for (int i = 0; i < 8; i++) {
		const struct dp_topo_nic *n = dp_topo_nic(t, i);
		char name[16];

		(void)snprintf(name, sizeof(name), "mlx5_%d", i);
		assert_string_equal(n->name, name);
		assert_int_equal(n->state, DP_TOPO_STATE_ACTIVE);
		assert_true(n->rate_gbps == 200);
		assert_int_equal(n->link_layer, DP_TOPO_LL_IB);
	}
	assert_string_equal(dp_topo_nic(t, 8)->name, "mlx5_8");
	assert_int_equal(dp_topo_nic(t, 8)->link_layer, DP_TOPO_LL_ETH);
	assert_true(dp_topo_nic(t, 8)->rate_gbps == 40);
	dp_topo_free(t);
}

static void check_gpud_h100_ib(const struct dp_topo *t)
{
	int rails = 0;

	assert_int_equal(dp_topo_nic_count(t), 9);
	for (int i = 0; i < 9; i++) {
		const struct dp_topo_nic *n = dp_topo_nic(t, i);

		if (strcmp(n->name, "mlx5_bond_0") == 0) {
			assert_int_equal(n->bond, 1);
			assert_int_equal(n->usable, 0);
			assert_int_equal(n->link_layer, DP_TOPO_LL_ETH);
			assert_true(n->rate_gbps == 200);
			assert_string_equal(n->model, "MT41692");
			continue;
		}
		rails++;
		assert_true(strcmp(n->name, "mlx5_2") != 0 && strcmp(n->name, "mlx5_3") != 0);
		assert_string_equal(n->model, "MT4129");
		assert_int_equal(n->state, DP_TOPO_STATE_ACTIVE);
		assert_true(n->rate_gbps == 400);
		assert_int_equal(n->link_layer, DP_TOPO_LL_IB);
		assert_int_equal(n->usable, 1);
	}
	assert_int_equal(rails, 8);
}

static void gpud_sys_class_infiniband(void **state)
{
	struct dp_topo *t = load("gpud-h100-sys-class-infiniband");

	(void)state;
	check_gpud_h100_ib(t);
	assert_string_equal(dp_topo_nic(t, 0)->name, "mlx5_0"); /* natural order */
	assert_string_equal(dp_topo_nic(t, 8)->name, "mlx5_bond_0");
	dp_topo_free(t);
}

static void gpud_nvlink_status(void **state)
{
	struct dp_topo *t = load("gpud-a100-nvidia-smi-nvlink-status.txt");

	(void)state;
	assert_int_equal(dp_topo_gpu_count(t), 8);
	for (int g = 0; g < 8; g++) {
		assert_string_equal(dp_topo_gpu(t, g)->model, "NVIDIA A100-SXM4-80GB");
		assert_int_equal(dp_topo_gpu(t, g)->nvlinks, 12);
		assert_true(dp_topo_gpu(t, g)->nvlink_gbps == 300);
	}
	dp_topo_free(t);
}

static void hwloc_dgx2(void **state)
{
	struct dp_topo *t = load("hwloc-nvidia-dgx2h-16gpu.xml");

	(void)state;
	assert_int_equal(dp_topo_gpu_count(t), 16);
	assert_int_equal(dp_topo_nic_count(t), 0);
	assert_int_equal(dp_topo_numa_count(t), 2);
	assert_int_equal(dp_topo_nvswitch_count(t), 12);
	for (int g = 0; g < 16; g++) {
		const struct dp_topo_gpu *gp = dp_topo_gpu(t, g);

		assert_string_equal(gp->model, "Tesla V100-SXM3-32GB-H");
		assert_int_equal(gp->pci_device, 0x1db8);
		assert_int_equal(gp->numa, g < 8 ? 0 : 1);
		/* 6 links of 25 GB/s, one to each NVSwitch of its board */
		assert_int_equal(gp->nvlinks, 6);
		assert_int_equal(gp->npeers, 6);
		assert_int_equal(gp->nvswitch, 1);
		assert_true(gp->nvlink_gbps == 150);
		assert_int_equal(gp->nic, -1);
	}
	assert_string_equal(dp_topo_gpu(t, 0)->pci, "0000:34:00.0");
	assert_int_equal(count_issues(t, DP_TOPO_WARN, "no usable RDMA NIC"), 1);
	dp_topo_free(t);
}

/* ---- malformed and truncated input ----------------------------------------- */

static void expect_format_error(const char *name, const char *format, const char *text,
				const char *want)
{
	struct dp_err err = { 0 };
	struct dp_topo *t = NULL;
	char msg[600];
	int rc = dp_topo_import_mem(name, format, text, strlen(text), &t, &err);

	if (rc != -EBADMSG)
		fail_msg("%s: rc %d (%s), want %s", name, rc, err.msg, want);
	assert_null(t);
	(void)snprintf(msg, sizeof(msg), "%s", want);
	assert_string_equal(err.msg, msg);
}

static void expect_parse_error(const char *name, const char *text, const char *want)
{
	expect_format_error(name, NULL, text, want);
}

static void malformed_inputs_give_file_line_errors(void **state)
{
	(void)state;
	expect_parse_error("t.xml",
			   "<system version=\"1\">\n  <cpu numaid=\"0\">\n"
			   "    <pci busid=\"0000:01:00.0\" class=\"0x030200\">\n",
			   "t.xml:4: error: Premature end of data in tag pci line 3");
	expect_parse_error("t.xml", "<system>\n <cpu numaid=\"0\">\n  <pci busid=\"zz\"/>\n",
			   "t.xml:4: error: Premature end of data in tag cpu line 2");
	expect_parse_error(
		"t.xml",
		"<system>\n <cpu numaid=\"0\">\n  <pci busid=\"zz\"/>\n </cpu>\n</system>\n",
		"t.xml:3: error: <pci>: bad PCI bus id \"zz\"");
	expect_parse_error("t.xml", "<system>\n <cpu numaid=\"x\">\n </cpu>\n</system>\n",
			   "t.xml:2: error: <cpu>: bad numaid \"x\"");
	expect_parse_error("t.xml",
			   "<system>\n <cpu numaid=\"0\" affinity=\"fffg\">\n </cpu>\n</system>\n",
			   "t.xml:2: error: <cpu>: bad affinity mask \"fffg\"");
	expect_parse_error("h.xml",
			   "<topology>\n  <object type=\"PCIDev\" pci_busid=\"0000:01:00.0\" "
			   "pci_type=\"junk\"/>\n</topology>\n",
			   "h.xml:2: error: <object type=\"PCIDev\">: bad pci_type \"junk\"");
	expect_parse_error("m.txt", "\tGPU0\tGPU1\tNIC0\nGPU0\t X \tNV18\tPIX\n",
			   "m.txt:3: error: truncated matrix: no row for GPU1");
	expect_parse_error("m.txt", "\tGPU0\tNIC0\nGPU0\t X \tFOO\n",
			   "m.txt:2: error: row GPU0: unknown cell \"FOO\"");
	expect_parse_error("m.txt", "\tGPU0\tNIC0\nGPU0\t X\n",
			   "m.txt:2: error: row GPU0: expected 2 cells, found 1");
	expect_parse_error("s.txt",
			   "CA 'mlx5_0'\n\tCA type: MT4129\n\tPort 1:\n\t\tState: Active\n",
			   "s.txt:5: error: truncated: no port state or link layer for 'mlx5_0'");
	expect_parse_error("s.txt", "CA 'mlx5_0'\n\tPort 1:\n\t\tState: Active\n\t\tRate: fast\n",
			   "s.txt:4: error: bad rate \"fast\"");
	expect_parse_error("v.txt", "hca_id:\tmlx5_0\n\tport:\t1\n\t\tstate:\t\tPORT_ACTIVE (4)\n",
			   "v.txt:4: error: truncated: no port state or link layer for 'mlx5_0'");
	expect_format_error("n.txt", "nvidia-smi-nvlink",
			    "GPU 0: NVIDIA A100 (UUID: x)\n\t Link 0: 25 GB\n",
			    "n.txt:2: error: bad link speed \"25 GB\"");
	expect_format_error("n.txt", "nvidia-smi-nvlink", "GPU 1: NVIDIA A100 (UUID: x)\n",
			    "n.txt:1: error: expected \"GPU 0: <name> (UUID: ...)\"");
	expect_parse_error("l.txt", "0000:01:00.0 3D controller: NVIDIA\n",
			   "l.txt:1: error: expected \"CLASS [cccc]: \" (lspci -nn)");
}

static void unknown_and_missing_inputs(void **state)
{
	struct dp_err err = { 0 };
	struct dp_topo *t = NULL;

	(void)state;
	assert_int_equal(dp_topo_import_mem("x", NULL, "hello\n", 6, &t, &err), -EPROTONOSUPPORT);
	assert_non_null(strstr(err.msg, "unknown topology format"));
	assert_int_equal(dp_topo_import_mem("x", NULL, "", 0, &t, &err), -EPROTONOSUPPORT);
	assert_int_equal(dp_topo_import("/nonexistent/topo.xml", &t, &err), -ENOENT);
	assert_string_equal(err.msg,
			    "topo: cannot open '/nonexistent/topo.xml': No such file or directory");
	assert_null(t);
}

/* Every real file cut at many points: an error naming FILE:LINE, or a
 * smaller but valid node; never a crash (ASan checks the memory). */
static void truncated_real_files_never_crash(void **state)
{
	static const char *files[] = {
		"azure-ndv5-h100-topo.xml",
		"azure-ndv4-a100-topo.xml",
		"azure-ndv4-a100-lspci-nn.txt",
		"aws-p4d-24xl-a100-topo.xml",
		"aws-p5-48xl-h100-topo-nics-only.xml",
		"ibm-vpc-gx3d-h100-nccl-topo.xml",
		"deepep-issue397-h100x8-12nic-nvidia-smi-topo-mp.txt",
		"deepep-issue397-h100x8-ibv_devinfo.txt",
		"gpud-h100-roce-12ca-ibstat.txt",
		"gpud-a100-ib-ibstatus.txt",
		"gpud-a100-nvidia-smi-nvlink-status.txt",
		"hwloc-nvidia-dgx2h-16gpu.xml",
	};

	(void)state;
	for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
		char path[512], prefix[600];
		char *buf;
		size_t len;
		int xml = strstr(files[f], ".xml") != NULL, errors = 0;

		(void)snprintf(path, sizeof(path), "%s%s", TOPO_DIR, files[f]);
		buf = dp_test_slurp(path);
		len = strlen(buf);
		(void)snprintf(prefix, sizeof(prefix), "%s:", files[f]);
		for (size_t cut = 1; cut < len; cut += len / 37 + 1) {
			struct dp_err err = { 0 };
			struct dp_topo *t = NULL;
			int rc = dp_topo_import_mem(files[f], NULL, buf, cut, &t, &err);

			if (rc == 0) {
				assert_non_null(t);
				dp_topo_free(t);
				continue;
			}
			assert_null(t);
			if (rc == -EPROTONOSUPPORT)
				continue; /* cut before the format is recognisable */
			assert_int_equal(rc, -EBADMSG);
			assert_memory_equal(err.msg, prefix, strlen(prefix));
			assert_non_null(strstr(err.msg, ": error: "));
			errors++;
		}
		/* a cut XML document is never well-formed */
		if (xml)
			assert_true(errors > 30);
		free(buf);
	}
}

/* ---- sysfs ----------------------------------------------------------------- */

static void sysfs_twogpu_fixture(void **state)
{
	struct dp_topo_cfg cfg = { .sysfs_root = FIXTURES "/sysfs/twogpu" };
	struct dp_err err = { 0 };
	struct dp_topo *t = NULL;
	const struct dp_topo_nic *n;

	(void)state;
	assert_int_equal(dp_topo_discover(&cfg, &t, &err), 0);
	assert_string_equal(dp_topo_hostname(t), "twogpu-test");
	assert_int_equal(dp_topo_gpu_count(t), 2);
	assert_int_equal(dp_topo_nic_count(t), 3);
	assert_string_equal(numa_id(t, 0)->cpus, "0-7");
	assert_string_equal(numa_id(t, 1)->cpus, "8-15");
	assert_string_equal(dp_topo_gpu(t, 0)->pci, "0000:03:00.0");
	assert_int_equal(dp_topo_gpu(t, 0)->numa, 0);
	assert_int_equal(dp_topo_gpu(t, 1)->numa, 1);
	/* names are reversed on this box: pairing follows the PCIe switch */
	assert_string_equal(gpu_nic(t, 0), "mlx5_1");
	assert_string_equal(gpu_nic(t, 1), "mlx5_0");
	assert_int_equal(dp_topo_gpu(t, 0)->dist, DP_TOPO_DIST_PIX);
	assert_int_equal(dp_topo_gpu(t, 0)->hops, 4);
	n = dp_topo_nic(t, dp_topo_nic_find(t, "mlx5_1"));
	assert_string_equal(n->netdev, "ibp4s0");
	assert_string_equal(n->pci, "0000:04:00.0");
	assert_int_equal(n->numa, 0);
	assert_true(n->rate_gbps == 400);
	assert_int_equal(n->state, DP_TOPO_STATE_ACTIVE);
	/* the Ethernet port on GPU0's switch has no RDMA device: never a rail */
	n = dp_topo_nic(t, dp_topo_nic_find(t, "eno1"));
	assert_int_equal(n->rdma, 0);
	assert_int_equal(n->usable, 0);
	assert_true(n->rate_gbps == 25);
	assert_int_equal(count_issues(t, DP_TOPO_INFO, "eno1 is not an RDMA device"), 1);
	/* the fixture describes another machine: NVML and verbs stay out */
	assert_string_equal(dp_topo_sources(t), "sysfs,nvml(skipped),verbs(skipped)");
	assert_int_equal(dp_topo_distance(t, 0, dp_topo_nic_find(t, "mlx5_0"), NULL),
			 DP_TOPO_DIST_SYS);
	dp_topo_free(t);
}

static void sysfs_gpud_h100_fixture(void **state)
{
	struct dp_topo_cfg cfg = { .sysfs_root = FIXTURES "/sysfs/gpud-h100" };
	struct dp_err err = { 0 };
	struct dp_topo *t = NULL;

	(void)state;
	assert_int_equal(dp_topo_discover(&cfg, &t, &err), 0);
	assert_int_equal(dp_topo_gpu_count(t), 0);
	check_gpud_h100_ib(t);
	dp_topo_free(t);
	/* the root also comes from the environment */
	assert_int_equal(setenv("DP_SYSFS_ROOT", FIXTURES "/sysfs/gpud-h100", 1), 0);
	assert_int_equal(dp_topo_discover(NULL, &t, &err), 0);
	(void)unsetenv("DP_SYSFS_ROOT");
	check_gpud_h100_ib(t);
	dp_topo_free(t);
}

static void sysfs_live_this_machine(void **state)
{
	struct dp_err err = { 0 };
	struct dp_topo *t = NULL;
	struct dp_buf b;

	(void)state;
	assert_int_equal(dp_topo_discover(NULL, &t, &err), 0);
	assert_non_null(strstr(dp_topo_sources(t), "sysfs"));
	if (access("/sys/devices/system/node/node0", F_OK) == 0) {
		assert_true(dp_topo_numa_count(t) >= 1);
		assert_true(numa_id(t, 0)->ncpus >= 1);
	}
	dp_buf_init(&b, 1 << 20);
	assert_int_equal(dp_topo_format_text(t, &b), 0);
	if (dp_topo_gpu_count(t) == 0)
		assert_non_null(strstr(dp_buf_str(&b), "no GPU found"));
	dp_buf_release(&b);
	dp_topo_free(t);
	assert_int_equal(
		dp_topo_discover(&(struct dp_topo_cfg){ .sysfs_root = "/nonexistent" }, &t, &err),
		-ENOENT);
}

/* ---- pairing rule on small synthetic nodes ---------------------------------- */

static struct dp_topo *xml_node(const char *body)
{
	struct dp_err err = { 0 };
	struct dp_topo *t = NULL;
	char buf[4096];

	(void)snprintf(buf, sizeof(buf), "<system version=\"1\">\n%s</system>\n", body);
	if (dp_topo_import_mem("synthetic.xml", "nccl-xml", buf, strlen(buf), &t, &err))
		fail_msg("%s", err.msg);
	return t;
}

#define PCI(b, c, v) "<pci busid=\"" b "\" class=\"" c "\" vendor=\"" v "\">"
#define NET(n, s)    "<nic><net name=\"" n "\" speed=\"" s "\"/></nic></pci>\n"

static void pairing_prefers_ib_and_fast_ports(void **state)
{
	struct dp_topo *t = xml_node("<cpu numaid=\"0\">" PCI(
		"0000:10:00.0", "0x060400",
		"0x10b5") "\n"
			  "<pci busid=\"0000:11:00.0\" class=\"0x030200\" vendor=\"0x10de\"/>\n" PCI(
				  "0000:12:00.0", "0x020000", "0x15b3") NET("mlx5_1", "100000")
					     PCI("0000:13:00.0", "0x020700", "0x15b3")
						     NET("mlx5_0", "400000") "</pci></cpu>\n");

	(void)state;
	assert_string_equal(gpu_nic(t, 0), "mlx5_0");
	assert_int_equal(dp_topo_gpu(t, 0)->nnear, 1);
	assert_int_equal(count_issues(t, DP_TOPO_INFO,
				      "Ethernet NIC beside an InfiniBand rail "
				      "mlx5_1 (100 Gb/s) ignored"),
			 1);
	dp_topo_free(t);
	t = xml_node("<cpu numaid=\"0\">" PCI(
		"0000:10:00.0", "0x060400",
		"0x10b5") "\n"
			  "<pci busid=\"0000:11:00.0\" class=\"0x030200\" vendor=\"0x10de\"/>\n" PCI(
				  "0000:12:00.0", "0x020000", "0x15b3") NET("mlx5_1", "100000")
				  PCI("0000:13:00.0", "0x020000", "0x15b3")
					  NET("mlx5_0", "400000") "</pci></cpu>\n");
	assert_string_equal(gpu_nic(t, 0), "mlx5_0");
	assert_int_equal(count_issues(t, DP_TOPO_INFO, "slower NIC at the same distance"), 1);
	dp_topo_free(t);
}

static void pairing_reports_cross_numa_and_bonds(void **state)
{
	struct dp_topo *t = xml_node(
		"<cpu numaid=\"0\">\n"
		"<pci busid=\"0000:11:00.0\" class=\"0x030200\" vendor=\"0x10de\"/>\n"
		"</cpu><cpu numaid=\"1\">\n" PCI("0000:92:00.0", "0x020700", "0x15b3")
			NET("mlx5_bond_0", "400000") PCI("0000:93:00.0", "0x020700", "0x15b3")
				NET("mlx5_0", "400000") "</cpu>\n");

	(void)state;
	assert_string_equal(gpu_nic(t, 0), "mlx5_0");
	assert_int_equal(dp_topo_gpu(t, 0)->dist, DP_TOPO_DIST_SYS);
	assert_int_equal(count_issues(t, DP_TOPO_WARN, "only at SYS distance"), 1);
	assert_int_equal(count_issues(t, DP_TOPO_INFO, "mlx5_bond_0 is a bonded device"), 1);
	assert_int_equal(dp_topo_nic(t, dp_topo_nic_find(t, "mlx5_bond_0"))->usable, 0);
	{
		const struct dp_topo *nodes[1] = { t };
		struct dp_topo_report r;
		int rail = 0, numa = 0;

		assert_int_equal(dp_topo_validate(nodes, 1, &r, NULL), 0);
		for (int i = 0; i < r.nchecks; i++) {
			const struct dp_topo_check *c = &r.checks[i];

			if (c->status != DP_TOPO_FAIL)
				continue;
			if (strcmp(c->name, "rail") == 0 &&
			    strcmp(c->detail, "GPU0: nearest RDMA NIC mlx5_0 is at SYS distance") ==
				    0)
				rail++;
			if (strcmp(c->name, "numa") == 0 &&
			    strcmp(c->detail, "GPU0 (NUMA 0) uses mlx5_0 on NUMA 1") == 0)
				numa++;
			assert_true(c->fix[0] != '\0');
		}
		assert_int_equal(rail, 1);
		assert_int_equal(numa, 1);
		dp_topo_report_release(&r);
	}
	dp_topo_free(t);
}

static void json_round_trip(void **state)
{
	struct dp_topo_cfg cfg = { .sysfs_root = FIXTURES "/sysfs/twogpu" };
	struct dp_err err = { 0 };
	struct dp_topo *t = NULL, *u = NULL;
	struct dp_buf b;

	(void)state;
	assert_int_equal(dp_topo_discover(&cfg, &t, &err), 0);
	dp_buf_init(&b, 1 << 20);
	assert_int_equal(dp_buf_adds(&b, "{\"nodes\":["), 0);
	assert_int_equal(dp_topo_format_json(t, &b), 0);
	assert_int_equal(dp_buf_adds(&b, "]}\n"), 0);
	/* what `dpworker --discover --json` prints, read back by the controller */
	assert_int_equal(dp_topo_import_mem("n.json", NULL, dp_buf_str(&b), b.len, &u, &err), 0);
	assert_string_equal(dp_topo_hostname(u), "twogpu-test");
	assert_string_equal(dp_topo_sources(u), "dpctl-json");
	assert_int_equal(dp_topo_gpu_count(u), 2);
	assert_int_equal(dp_topo_nic_count(u), 3);
	assert_string_equal(gpu_nic(u, 0), "mlx5_1");
	assert_string_equal(gpu_nic(u, 1), "mlx5_0");
	assert_int_equal(dp_topo_gpu(u, 1)->dist, DP_TOPO_DIST_PIX);
	assert_int_equal(dp_topo_nic(u, dp_topo_nic_find(u, "eno1"))->usable, 0);
	assert_string_equal(numa_id(u, 1)->cpus, "8-15");
	dp_buf_release(&b);
	dp_topo_free(u);
	dp_topo_free(t);
	expect_parse_error("x.json", "{\"nodes\":[{\"gpus\":[\n",
			   "x.json:2: error: ']' expected near end of file");
	expect_parse_error("x.json", "{\"nodes\":[{}, {}]}\n",
			   "x.json: error: \"nodes\" must hold exactly one node per file");
}

/* ---- sources, validation, CLI ---------------------------------------------- */

static void source_table_contract(void **state)
{
	const struct dp_topo_source *const *s = topo_source_table();
	int n = 0;

	(void)state;
	for (int i = 0; s[i]; i++, n++) {
		assert_non_null(s[i]->name);
		assert_non_null(s[i]->load);
		assert_non_null(s[i]->detect);
		assert_non_null(s[i]->probe);
		assert_true(s[i]->flags != 0);
		for (int j = 0; j < i; j++)
			assert_true(strcmp(s[i]->name, s[j]->name) != 0 ||
				    /* verbs appears once, built or stub */ 0);
	}
	assert_true(n >= 12);
	assert_int_equal(topo_src_no_probe(NULL), -EOPNOTSUPP);
	assert_int_equal(topo_src_no_detect("x", 1), -EOPNOTSUPP);
	for (int i = 0; dp_topo_format_name(i); i++)
		assert_non_null(dp_topo_format_name(i));
#ifndef DP_HAVE_VERBS
	assert_int_equal(topo_src_verbs.probe(NULL), -ENOSYS);
	{
		struct dp_err err = { 0 };

		assert_int_equal(topo_src_verbs.load(NULL, NULL, &err), -ENOSYS);
		assert_string_equal(err.msg, "dpctl was built without verbs");
	}
#endif
}

static void helpers_parse_real_strings(void **state)
{
	char out[64], pci[DP_TOPO_PCI_LEN];
	double r = 0;
	int n = 0;

	(void)state;
	assert_int_equal(topo_cpumask_to_list("ffffffff,ffff0000,00000000", out, sizeof(out), &n),
			 0);
	assert_string_equal(out, "48-95");
	assert_int_equal(n, 48);
	assert_int_equal(topo_cpumask_to_list("0x03000000", out, sizeof(out), &n), 0);
	assert_string_equal(out, "24-25");
	assert_int_equal(topo_cpulist_count("0-3,8,10-11"), 7);
	assert_int_equal(topo_cpulist_count("3-1"), -EINVAL);
	assert_int_equal(topo_pci_norm("00000000:A4:00.0", pci), 0);
	assert_string_equal(pci, "0000:a4:00.0");
	assert_int_equal(topo_pci_norm("10:1c.0", pci), 0);
	assert_string_equal(pci, "0000:10:1c.0");
	assert_int_equal(topo_pci_norm("fffffff:ff:ff.0", pci), 0);
	assert_string_equal(pci, "ffff:ff:ff.0");
	assert_int_equal(topo_pci_norm("0000:10:1c.9", pci), -EINVAL);
	assert_int_equal(topo_parse_rate("200 Gb/sec (4X HDR)", &r), 0);
	assert_true(r == 200);
	assert_int_equal(topo_parse_rate("400", &r), 0);
	assert_int_equal(topo_parse_rate("fast", &r), -EINVAL);
	assert_int_equal(topo_parse_state("4: ACTIVE"), DP_TOPO_STATE_ACTIVE);
	assert_int_equal(topo_parse_state("PORT_ACTIVE (4)"), DP_TOPO_STATE_ACTIVE);
	assert_int_equal(topo_parse_state("1: DOWN"), DP_TOPO_STATE_DOWN);
}

static const struct dp_topo_check *find_check(const struct dp_topo_report *r, const char *name,
					      enum dp_topo_check_status st)
{
	for (int i = 0; i < r->nchecks; i++)
		if (strcmp(r->checks[i].name, name) == 0 && r->checks[i].status == st)
			return &r->checks[i];
	return NULL;
}

static void validate_checks(void **state)
{
	struct dp_topo *ibm = load("ibm-vpc-gx3d-h100-nccl-topo.xml");
	struct dp_topo *p4d = load("aws-p4d-24xl-a100-topo.xml");
	struct dp_topo *dgx2 = load("hwloc-nvidia-dgx2h-16gpu.xml");
	struct dp_topo_report r;
	const struct dp_topo *nodes[2] = { ibm, ibm };
	const struct dp_topo_check *c;

	(void)state;
	assert_int_equal(dp_topo_validate(nodes, 2, &r, NULL), 0);
	assert_int_equal(r.nfail, 0);
	assert_non_null(find_check(&r, "nvlink", DP_TOPO_PASS));
	assert_non_null(find_check(&r, "homogeneity", DP_TOPO_PASS));
	/* the XML has no port states: a warning, not a pass */
	assert_non_null(find_check(&r, "ports", DP_TOPO_CHECK_WARN));
	dp_topo_report_release(&r);

	nodes[1] = p4d;
	assert_int_equal(dp_topo_validate(nodes, 2, &r, NULL), 0);
	assert_non_null(find_check(&r, "nic-shared", DP_TOPO_CHECK_WARN));
	c = find_check(&r, "homogeneity", DP_TOPO_FAIL);
	assert_non_null(c);
	assert_non_null(strstr(c ? c->detail : "", "8 GPUs (A100 SXM4 40GB), 4 RDMA NICs"));
	assert_true(r.nfail >= 1);
	dp_topo_report_release(&r);

	nodes[0] = dgx2;
	assert_int_equal(dp_topo_validate(nodes, 1, &r, NULL), 0);
	c = find_check(&r, "rdma-nics", DP_TOPO_FAIL);
	assert_non_null(c);
	assert_true(c && c->fix[0] != '\0');
	dp_topo_report_release(&r);
	dp_topo_free(ibm);
	dp_topo_free(p4d);
	dp_topo_free(dgx2);
}

static void cli_show_validate_discover(void **state)
{
	const char *ibm = TOPO_DIR "ibm-vpc-gx3d-h100-nccl-topo.xml";
	const char *ndv5 = TOPO_DIR "azure-ndv5-h100-topo.xml";
	const char *dgx2 = TOPO_DIR "hwloc-nvidia-dgx2h-16gpu.xml";
	const char *merged =
		TOPO_DIR "deepep-issue397-h100x8-12nic-nvidia-smi-topo-mp.txt+" TOPO_DIR
			 "deepep-issue397-h100x8-ibv_devinfo.txt";
	const char *twogpu = FIXTURES "/sysfs/twogpu";
	struct dp_test_run r;

	(void)state;
	r = dp_test_dpctl("topo", "show", "--json", ibm);
	assert_int_equal(r.rc, EX_OK);
	assert_non_null(
		strstr(r.out, "{\"nodes\":[{\"hostname\":\"ibm-vpc-gx3d-h100-nccl-topo.xml\""));
	assert_non_null(strstr(r.out, "\"pci\":\"0000:a4:00.0\",\"numa\":0"));
	assert_non_null(strstr(r.out, "\"nic\":\"mlx5_7\""));
	assert_non_null(strstr(r.out,
			       "\"name\":\"mlx5_0\",\"netdev\":null,\"pci\":\"0000:e9:00.0\","
			       "\"numa\":1,\"port\":1,\"link_layer\":\"Ethernet\","
			       "\"rate_gbps\":200"));
	dp_test_run_free(&r);

	r = dp_test_dpctl("topo", "show", merged);
	assert_int_equal(r.rc, EX_OK);
	assert_non_null(strstr(r.out, "5    -             1     mlx5_9                 PIX"));
	dp_test_run_free(&r);

	{
		char *bad = dp_test_write_tmp(".xml", "<system>\n<cpu numaid=\"0\">\n");
		char want[600];

		r = dp_test_dpctl("topo", "show", bad);
		assert_int_equal(r.rc, EX_DATAERR);
		(void)snprintf(want, sizeof(want),
			       "%s:3: error: Premature end of data in tag cpu line 2\n", bad);
		assert_string_equal(r.err, want);
		dp_test_run_free(&r);
		(void)unlink(bad);
		free(bad);
	}

	r = dp_test_dpctl("topo", "show", "/nonexistent.xml");
	assert_int_equal(r.rc, EX_NOINPUT);
	dp_test_run_free(&r);
	r = dp_test_dpctl("topo", "show");
	assert_int_equal(r.rc, EX_USAGE);
	dp_test_run_free(&r);
	r = dp_test_dpctl("topo", "frob");
	assert_int_equal(r.rc, EX_USAGE);
	assert_non_null(strstr(r.err, "unknown subcommand 'frob'"));
	dp_test_run_free(&r);

	r = dp_test_dpctl("topo", "validate", dgx2);
	assert_int_equal(r.rc, EX_DATAERR);
	assert_non_null(strstr(r.out, "rdma-nics"));
	assert_non_null(strstr(r.out, "fail"));
	assert_non_null(strstr(r.out, "fix: "));
	dp_test_run_free(&r);

	r = dp_test_dpctl("topo", "validate", "--root", twogpu);
	assert_int_equal(r.rc, EX_OK);
	assert_non_null(strstr(r.out, "validate: 1 node, "));
	assert_non_null(strstr(r.out, ", 0 failed"));
	dp_test_run_free(&r);

	r = dp_test_dpctl("--json", "topo", "validate", ibm, ndv5);
	assert_int_equal(r.rc, EX_DATAERR);
	assert_non_null(strstr(r.out,
			       "{\"name\":\"homogeneity\",\"node\":\"azure-ndv5-h100-topo.xml\","
			       "\"status\":\"fail\""));
	dp_test_run_free(&r);

	r = dp_test_dpctl("topo", "discover", "--json", "--root", twogpu);
	assert_int_equal(r.rc, EX_OK);
	assert_non_null(strstr(r.out, "{\"nodes\":[{\"hostname\":\"twogpu-test\""));
	dp_test_run_free(&r);
	r = dp_test_dpctl("topo", "discover");
	assert_int_equal(r.rc, EX_OK);
	assert_non_null(strstr(r.out, "sources: sysfs"));
	dp_test_run_free(&r);
}

static void worker_discover_prints_the_json_model(void **state)
{
	char *argv[] = { "dpworker", "--discover", "--json", NULL };
	char *out = NULL, *errs = NULL;
	size_t olen = 0, elen = 0;
	FILE *o, *e;
	int rc;

	(void)state;
	o = open_memstream(&out, &olen);
	e = open_memstream(&errs, &elen);
	assert_non_null(o);
	assert_non_null(e);
	assert_int_equal(setenv("DP_SYSFS_ROOT", FIXTURES "/sysfs/twogpu", 1), 0);
	rc = dp_worker_main(3, argv, o, e);
	(void)unsetenv("DP_SYSFS_ROOT");
	(void)fclose(o);
	(void)fclose(e);
	assert_int_equal(rc, EX_OK);
	assert_string_equal(errs, "");
	assert_non_null(strstr(out, "{\"nodes\":[{\"hostname\":\"twogpu-test\""));
	assert_non_null(strstr(out, "\"nic\":\"mlx5_1\""));
	free(out);
	free(errs);
}

/* ---- golden outputs ---------------------------------------------------------- */

static void golden_one(const char *input, const char *golden)
{
	struct dp_test_run r = dp_test_dpctl("topo", "show", input);
	char path[512];

	assert_int_equal(r.rc, EX_OK);
	(void)snprintf(path, sizeof(path), "%s/topo/%s.txt", FIXTURES, golden);
	if (getenv("DP_UPDATE_GOLDEN")) {
		FILE *f = fopen(path, "w");

		assert_non_null(f);
		(void)fputs(r.out, f);
		assert_int_equal(fclose(f), 0);
	} else {
		char *want = dp_test_slurp(path);

		if (strcmp(want, r.out) != 0) {
			char *got = dp_test_write_tmp(".txt", r.out);
			char cmd[1200];

			(void)snprintf(cmd, sizeof(cmd), "diff -u '%s' '%s' >&2", path, got);
			(void)system(cmd);
			(void)unlink(got);
			free(got);
			fail_msg("%s differs from %s (DP_UPDATE_GOLDEN=1 rewrites it)", input,
				 path);
		}
		free(want);
	}
	dp_test_run_free(&r);
}

static void golden_outputs(void **state)
{
	static const char *files[] = {
		"azure-ndv5-h100-topo.xml",
		"azure-ndv4-a100-topo.xml",
		"azure-ndv4-a100-lspci-nn.txt",
		"aws-p4d-24xl-a100-topo.xml",
		"aws-p5-48xl-h100-topo-nics-only.xml",
		"ibm-vpc-gx3d-h100-nccl-topo.xml",
		"deepep-issue397-h100x8-12nic-nvidia-smi-topo-mp.txt",
		"deepep-issue397-h100x8-ibv_devinfo.txt",
		"gpud-h100-roce-12ca-ibstat.txt",
		"gpud-a100-ib-ibstatus.txt",
		"gpud-a100-nvidia-smi-nvlink-status.txt",
		"hwloc-nvidia-dgx2h-16gpu.xml",
		"gpud-h100-sys-class-infiniband",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char in[512];

		(void)snprintf(in, sizeof(in), "%s%s", TOPO_DIR, files[i]);
		golden_one(in, files[i]);
	}
	golden_one(FIXTURES "/sysfs/twogpu", "sysfs-twogpu");
}

/* 72 nodes imported and validated well under a second (the launcher collects
 * one file per node). */
static void inventory_of_72_nodes_is_fast(void **state)
{
	struct dp_topo *nodes[72];
	struct dp_topo_report r;
	struct timespec a, b;
	double s;

	(void)state;
	(void)clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < 72; i++)
		nodes[i] = load("ibm-vpc-gx3d-h100-nccl-topo.xml");
	assert_int_equal(dp_topo_validate((const struct dp_topo *const *)nodes, 72, &r, NULL), 0);
	(void)clock_gettime(CLOCK_MONOTONIC, &b);
	s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	print_message("# 72 nodes imported and validated in %.3f s\n", s);
	assert_int_equal(r.nfail, 0);
	assert_true(s < 1.0);
	dp_topo_report_release(&r);
	for (int i = 0; i < 72; i++)
		dp_topo_free(nodes[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(azure_ndv5_h100),
		cmocka_unit_test(azure_ndv4_a100),
		cmocka_unit_test(azure_ndv4_lspci),
		cmocka_unit_test(azure_ndv4_xml_plus_lspci),
		cmocka_unit_test(aws_p4d),
		cmocka_unit_test(aws_p5_nics_only),
		cmocka_unit_test(ibm_gx3d_reversed),
		cmocka_unit_test(deepep_topo_mp),
		cmocka_unit_test(smi_topo_m_space_aligned_with_nvlink),
		cmocka_unit_test(deepep_ibv_devinfo),
		cmocka_unit_test(deepep_merged_rail_map),
		cmocka_unit_test(gpud_ibstat_roce),
		cmocka_unit_test(gpud_ibstatus_hdr),
		cmocka_unit_test(gpud_sys_class_infiniband),
		cmocka_unit_test(gpud_nvlink_status),
		cmocka_unit_test(hwloc_dgx2),
		cmocka_unit_test(malformed_inputs_give_file_line_errors),
		cmocka_unit_test(unknown_and_missing_inputs),
		cmocka_unit_test(truncated_real_files_never_crash),
		cmocka_unit_test(sysfs_twogpu_fixture),
		cmocka_unit_test(sysfs_gpud_h100_fixture),
		cmocka_unit_test(sysfs_live_this_machine),
		cmocka_unit_test(pairing_prefers_ib_and_fast_ports),
		cmocka_unit_test(pairing_reports_cross_numa_and_bonds),
		cmocka_unit_test(json_round_trip),
		cmocka_unit_test(source_table_contract),
		cmocka_unit_test(helpers_parse_real_strings),
		cmocka_unit_test(validate_checks),
		cmocka_unit_test(cli_show_validate_discover),
		cmocka_unit_test(worker_discover_prints_the_json_model),
		cmocka_unit_test(golden_outputs),
		cmocka_unit_test(inventory_of_72_nodes_is_fast),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
