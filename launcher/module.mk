# launcher/module.mk - sources of the launcher module (all .c files here; see the GNUmakefile
# for the optional-part naming rules).
LIB_SRCS += $(wildcard launcher/*.c)
LIB_CU_SRCS += $(wildcard launcher/*.cu)
