# topo/module.mk - sources of the topo module (all .c files here; see the GNUmakefile
# for the optional-part naming rules).
LIB_SRCS += $(wildcard topo/*.c)
LIB_CU_SRCS += $(wildcard topo/*.cu)
