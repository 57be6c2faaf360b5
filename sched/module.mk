# sched/module.mk - sources of the sched module (all .c files here; see the GNUmakefile
# for the optional-part naming rules).
LIB_SRCS += $(wildcard sched/*.c)
LIB_CU_SRCS += $(wildcard sched/*.cu)
