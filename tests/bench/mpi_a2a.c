/* tests/bench/mpi_a2a.c - the Open MPI peer of `dpctl bench a2a`: times
 * MPI_Alltoallv moving the same tokens as dpctl's naive all-to-all (every
 * token once to every rank holding one of its experts), dispatch and combine
 * (the reverse exchange).  Built only by tests/bench/a2a.sh (mpicc).
 *
 *   mpirun -np W mpi_a2a COUNTS_FILE ITERS
 *
 * COUNTS_FILE comes from `dpctl bench a2a --counts FILE` (same routing, same
 * seed): a header with world, nodes, ranks_per_node and token_bytes, then one
 * line per source rank with its token count for every destination rank.
 * Rank r is on node r / ranks_per_node, as in dpctl.  Prints one row in the
 * layout of dpctl's table: mean dispatch and combine time of the slowest rank
 * (ms), dispatch payload bytes crossing nodes and staying inside a node (all
 * ranks, one round, self-copies not counted), dispatch GB/s. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ITERS 50

static int die(const char *msg)
{
	(void)fprintf(stderr, "mpi_a2a: %s\n", msg);
	MPI_Abort(MPI_COMM_WORLD, 1);
	return 1;
}

int main(int argc, char **argv)
{
	int me, np, world = 0, iters;
	long nodes = 0, rpn = 0;
	unsigned long long tb = 0, inter = 0, intra = 0;
	FILE *f;
	char magic[32];
	int *scnt, *rcnt, *sdis, *rdis;
	char *sbuf, *rbuf;
	long long stot = 0, rtot = 0;
	double disp[MAX_ITERS], comb[MAX_ITERS], dsum = 0, csum = 0;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &me);
	MPI_Comm_size(MPI_COMM_WORLD, &np);
	if (argc != 3)
		return die("usage: mpi_a2a COUNTS_FILE ITERS");
	iters = atoi(argv[2]);
	if (iters < 1 || iters > MAX_ITERS)
		return die("ITERS must be 1..50");
	f = fopen(argv[1], "r");
	if (!f || fscanf(f, "%31s 1 world %d nodes %ld ranks_per_node %ld token_bytes %llu", magic,
			 &world, &nodes, &rpn, &tb) != 5 ||
	    strcmp(magic, "dp-a2a-counts") != 0)
		return die("cannot read the counts file header");
	if (world != np || nodes * rpn != world || tb == 0 || tb % sizeof(float))
		return die("the counts file is for another number of ranks");
	scnt = calloc((size_t)np, sizeof(int));
	rcnt = calloc((size_t)np, sizeof(int));
	sdis = calloc((size_t)np, sizeof(int));
	rdis = calloc((size_t)np, sizeof(int));
	if (!scnt || !rcnt || !sdis || !rdis)
		return die("out of memory");
	for (int i = 0; i < np; i++)
		for (int j = 0; j < np; j++) {
			unsigned long long c;

			if (fscanf(f, "%llu", &c) != 1 || c > (1ULL << 30) / tb)
				return die("bad count in the counts file");
			if (i / rpn != j / rpn)
				inter += c * tb;
			else if (i != j) /* self-copies are not counted, as in dpctl */
				intra += c * tb;
			if (i == me)
				scnt[j] = (int)(c * (tb / sizeof(float)));
			if (j == me)
				rcnt[i] = (int)(c * (tb / sizeof(float)));
		}
	(void)fclose(f);
	for (int j = 0; j < np; j++) {
		sdis[j] = (int)stot;
		rdis[j] = (int)rtot;
		stot += scnt[j];
		rtot += rcnt[j];
	}
	if (stot > 0x7fffffff || rtot > 0x7fffffff)
		return die("too many floats for int displacements");
	sbuf = malloc((size_t)stot * sizeof(float) + 1);
	rbuf = malloc((size_t)rtot * sizeof(float) + 1);
	if (!sbuf || !rbuf)
		return die("out of memory");
	memset(sbuf, 1, (size_t)stot * sizeof(float));
	for (int it = -1; it < iters; it++) { /* -1: warm-up */
		double t0, t1, t2, t3, d, c;

		MPI_Barrier(MPI_COMM_WORLD);
		t0 = MPI_Wtime();
		MPI_Alltoallv(sbuf, scnt, sdis, MPI_FLOAT, rbuf, rcnt, rdis, MPI_FLOAT,
			      MPI_COMM_WORLD);
		t1 = MPI_Wtime();
		MPI_Barrier(MPI_COMM_WORLD);
		t2 = MPI_Wtime();
		/* combine: every received token goes back to its sender */
		MPI_Alltoallv(rbuf, rcnt, rdis, MPI_FLOAT, sbuf, scnt, sdis, MPI_FLOAT,
			      MPI_COMM_WORLD);
		t3 = MPI_Wtime();
		d = (t1 - t0) * 1e3;
		c = (t3 - t2) * 1e3;
		MPI_Allreduce(MPI_IN_PLACE, &d, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
		MPI_Allreduce(MPI_IN_PLACE, &c, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
		if (it >= 0) {
			disp[it] = d;
			comb[it] = c;
		}
	}
	for (int it = 0; it < iters; it++) {
		dsum += disp[it];
		csum += comb[it];
	}
	dsum /= iters;
	csum /= iters;
	if (me == 0)
		(void)printf("%-8s %12.2f %12.2f %14.2f %14.2f %12.3f\n", "mpi-a2av", dsum, csum,
			     (double)inter / 1e6, (double)intra / 1e6,
			     dsum > 0 ? (double)(inter + intra) / 1e6 / dsum : 0.0);
	free(scnt);
	free(rcnt);
	free(sdis);
	free(rdis);
	free(sbuf);
	free(rbuf);
	MPI_Finalize();
	return 0;
}
