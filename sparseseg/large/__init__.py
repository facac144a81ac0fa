"""How sparseseg scales past memory and past one machine: training on the slabs around annotated planes (`slabs`,
`bounded`) and segmenting on a dask cluster (`cluster`)."""
