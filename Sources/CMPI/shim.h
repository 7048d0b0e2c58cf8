#include <mpi.h>

// Open MPI spells its handles as macros with casts (MPI_COMM_WORLD, MPI_FLOAT, ...), which Swift
// cannot import: these functions hand them over.
static inline MPI_Comm qat_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype qat_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype qat_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype qat_mpi_byte(void) { return MPI_BYTE; }
static inline int qat_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
